"""The mail provider, as the sync sees it: one small interface, Gmail's model (a history of numbered changes
since a start id, a message fetch, the current id, a push subscription). The simulator's HTTP client
(processing/provider_simulator.py) is the first implementation; a Gmail or Graph client would be the next.

Provider semantics the sync relies on (the simulator behaves so, as Gmail does):
- history ids rise per mailbox, with gaps allowed; `history_since(start)` lists the entries with id > start;
- a start id older than the provider's retention raises `HistoryExpired` (Gmail's 404): the caller resyncs
  from `current_history_id()`, taken *before* listing the recent messages, never from a message;
- notifications are hints: lost, duplicated, late or out of order.

The simulator's HTTP API (all JSON; `{address}` is URL-quoted; base URL e.g. http://127.0.0.1:8000/simulator):
- `POST /send_email` `{"from", "to", "subject", "body", "html"?, "headers"?, "raw"?}` → 201
  `{"email_id", "history_id"}`; `to` may be one address or a list (one message per mailbox, each its own id:
  the answer then also has `"emails": [{"mailbox", "email_id", "history_id"}, ...]`). 400 with `{"detail"}`.
- `GET /mailboxes/{address}/profile` → `{"email_address", "history_id", "oldest_history_id", "messages_total"}`
  (404 for an unknown mailbox).
- `GET /mailboxes/{address}/history?start_history_id=N&max_results=500&page_token=T` →
  `{"history": [{"id": N, "messages_added": [{"id": "<email_id>"}]}], "history_id": <current>,
  "next_page_token": "..." | null}`; 404 `{"detail": "start_history_id is older than the retention"}`.
- `GET /mailboxes/{address}/messages?max_results=N` → `{"messages": [{"id", "history_id"}], "history_id"}`,
  newest first (for a full sync).
- `GET /mailboxes/{address}/messages/{email_id}` → `{"id", "history_id", "internal_date" (ISO 8601),
  "raw" (base64url of the RFC 5322 bytes), "size_estimate"}`.
- `POST /mailboxes/{address}/batch_get` `{"ids": [...]}` (at most 100) → `{"messages": [<as the fetch above>],
  "missing": ["<email_id>", ...]}` (Gmail's batch requests: one round trip for a page of history).
- `PUT /mailboxes/{address}/watch` `{"url", "secret"}` → 200 `{"history_id", "expiration"}` (creates the
  mailbox if needed); `DELETE` the same stops it. After each new message the simulator POSTs to `url` the body
  `{"type": "mailbox.history", "email_address", "history_id", "timestamp"}` signed per Standard Webhooks
  (headers `webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256>` with `secret`).
- `PUT /faults` `{"drop": 0.1, "duplicate": 0.2, "delay_ms": [0, 2000], "reorder": true, "seed": 7}` changes
  how notifications are delivered (all off by default; `GET /faults` reads them, `DELETE /faults` resets);
  `POST /mailboxes/{address}/expire_history` `{"before": N}` forgets history entries below N (the retention);
  `INBOUND_SIMULATOR_RETENTION` entries per mailbox are kept otherwise.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


class ProviderError(Exception):
    """The provider could not answer (after the client's own retries): the caller retries later."""


class HistoryExpired(ProviderError):
    """The start id is older than the provider keeps history for (Gmail: HTTP 404): resync."""


class MessageGone(ProviderError):
    """The message was deleted before we fetched it (HTTP 404 on fetch): nothing to store, not a failure."""


@dataclass(frozen=True)
class HistoryEntry:
    history_id: int
    email_ids: tuple[str, ...]


@dataclass(frozen=True)
class HistoryPage:
    entries: tuple[HistoryEntry, ...]
    current_history_id: int
    next_page_token: str | None


@dataclass(frozen=True)
class ProviderMessage:
    email_id: str
    history_id: int
    raw: bytes
    internal_date: datetime


@dataclass(frozen=True)
class MessageRef:
    email_id: str
    history_id: int


FetchedMessages = dict[str, "ProviderMessage | Exception"]


class MailProvider(Protocol):
    def current_history_id(self, address: str) -> int: ...

    def history_since(self, address: str, start_history_id: int, *, page_token: str | None = None) -> HistoryPage:
        """One page of entries with id > start_history_id, oldest first. Raises HistoryExpired."""
        ...

    def recent_messages(self, address: str, *, limit: int) -> list[MessageRef]:
        """The newest `limit` messages, newest first (full sync and resync)."""
        ...

    def fetch_message(self, address: str, email_id: str) -> ProviderMessage:
        """Raises MessageGone when it no longer exists."""
        ...

    def fetch_messages(self, address: str, email_ids: Sequence[str]) -> "FetchedMessages":
        """Several at once, by id: an id missing from the answer no longer exists; an exception in place of a
        message says why that one could not be read (the sync counts it against its entry). Raises
        ProviderError when the provider could not answer at all."""
        ...

    def watch(self, address: str, *, url: str, secret: str) -> int:
        """Subscribes `url` to the mailbox's notifications, signed with `secret`; returns the current id."""
        ...


def provider_for(mailbox) -> MailProvider:
    """The client for a Mailbox row (its provider and URL, or the INBOUND_PROVIDER_URL setting)."""
    from django.conf import settings
    from django.utils.module_loading import import_string

    # By name: the implementations import this module (their interface), not the other way round.
    provider_class = import_string(PROVIDER_CLASSES[mailbox.provider])
    return provider_class(base_url=mailbox.provider_url or settings.INBOUND_PROVIDER_URL)


PROVIDER_CLASSES = {"simulator": "processing.provider_simulator.SimulatorProvider"}
