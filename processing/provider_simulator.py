"""The simulator's HTTP client: processing.providers.MailProvider over the API that module documents. Transient
failures (connection errors, timeouts, 429, 5xx) are retried INBOUND_PROVIDER_RETRIES times with exponential
backoff and jitter; a 404 on history means HistoryExpired, on a message fetch MessageGone; anything else ends in a
ProviderError that says what was asked and what came back."""

import base64
import binascii
import random
import time
from collections.abc import Sequence
from datetime import datetime
from urllib.parse import quote

import requests
from django.conf import settings

from processing.providers import (
    FetchedMessages,
    HistoryEntry,
    HistoryExpired,
    HistoryPage,
    MessageGone,
    MessageRef,
    ProviderError,
    ProviderMessage,
)

BACKOFF_BASE_SECONDS = 0.2  # doubled each retry, ±50 % jitter
BACKOFF_MAX_SECONDS = 5.0
HISTORY_PAGE_SIZE = 500
BATCH_GET_SIZE = 100  # the simulator's limit per batch_get, as Gmail's per batch request


class _NotFound(Exception):
    pass


class SimulatorProvider:
    def __init__(
        self, *, base_url: str, timeout: float | None = None, retries: int | None = None, backoff: float | None = None
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = settings.INBOUND_PROVIDER_TIMEOUT_SECONDS if timeout is None else timeout
        self.retries = settings.INBOUND_PROVIDER_RETRIES if retries is None else retries
        self.backoff = BACKOFF_BASE_SECONDS if backoff is None else backoff
        self.session = requests.Session()

    def _mailbox_path(self, address: str) -> str:
        return f"/mailboxes/{quote(address, safe='@')}"

    def _call(self, method: str, path: str, **kwargs) -> dict:
        """The JSON answer of a 2xx; _NotFound on 404; ProviderError once retries are spent or on another 4xx."""
        url = self.base_url + path
        problem = ""
        for attempt in range(self.retries + 1):
            if attempt:
                delay = min(BACKOFF_MAX_SECONDS, self.backoff * 2 ** (attempt - 1))
                time.sleep(delay * random.uniform(0.5, 1.5))
            try:
                answer = self.session.request(method, url, timeout=self.timeout, **kwargs)
            except requests.RequestException as error:
                problem = f"{type(error).__name__}: {error}"
                continue
            if answer.status_code == 404:
                raise _NotFound(_detail(answer))
            if answer.status_code == 429 or answer.status_code >= 500:
                problem = f"HTTP {answer.status_code} {_detail(answer)}"
                continue
            if not 200 <= answer.status_code < 300:
                raise ProviderError(f"{method} {url}: HTTP {answer.status_code} {_detail(answer)}")
            try:
                data = answer.json()
            except ValueError:
                raise ProviderError(f"{method} {url}: the answer is not JSON") from None
            if not isinstance(data, dict):
                raise ProviderError(f"{method} {url}: the answer is not a JSON object")
            return data
        raise ProviderError(f"{method} {url} failed after {self.retries + 1} attempts: {problem}")

    def current_history_id(self, address: str) -> int:
        try:
            data = self._call("GET", f"{self._mailbox_path(address)}/profile")
        except _NotFound as error:
            raise ProviderError(f"unknown mailbox {address}: {error}") from None
        return _int(data, "history_id")

    def history_since(self, address: str, start_history_id: int, *, page_token: str | None = None) -> HistoryPage:
        params = {"start_history_id": start_history_id, "max_results": HISTORY_PAGE_SIZE}
        if page_token:
            params["page_token"] = page_token
        try:
            data = self._call("GET", f"{self._mailbox_path(address)}/history", params=params)
        except _NotFound as error:
            raise HistoryExpired(f"history of {address} from {start_history_id}: {error}") from None
        try:
            entries = tuple(
                HistoryEntry(
                    history_id=int(item["id"]),
                    email_ids=tuple(str(added["id"]) for added in item.get("messages_added", [])),
                )
                for item in data["history"]
            )
        except (KeyError, TypeError, ValueError) as error:
            raise ProviderError(f"history of {address}: unexpected answer ({error!r})") from None
        token = data.get("next_page_token")
        return HistoryPage(
            entries=entries, current_history_id=_int(data, "history_id"), next_page_token=str(token) if token else None
        )

    def recent_messages(self, address: str, *, limit: int) -> list[MessageRef]:
        try:
            data = self._call("GET", f"{self._mailbox_path(address)}/messages", params={"max_results": limit})
        except _NotFound as error:
            raise ProviderError(f"unknown mailbox {address}: {error}") from None
        try:
            items = data["messages"]
            return [MessageRef(email_id=str(item["id"]), history_id=int(item["history_id"])) for item in items]
        except (KeyError, TypeError, ValueError) as error:
            raise ProviderError(f"messages of {address}: unexpected answer ({error!r})") from None

    def fetch_message(self, address: str, email_id: str) -> ProviderMessage:
        try:
            data = self._call("GET", f"{self._mailbox_path(address)}/messages/{quote(email_id, safe='')}")
        except _NotFound as error:
            raise MessageGone(f"message {email_id} of {address}: {error}") from None
        return _message(data, what=f"message {email_id} of {address}")

    def fetch_messages(self, address: str, email_ids: Sequence[str]) -> FetchedMessages:
        found: FetchedMessages = {}
        for start in range(0, len(email_ids), BATCH_GET_SIZE):
            ids = list(email_ids[start : start + BATCH_GET_SIZE])
            try:
                data = self._call("POST", f"{self._mailbox_path(address)}/batch_get", json={"ids": ids})
            except _NotFound as error:
                raise ProviderError(f"unknown mailbox {address}: {error}") from None
            items = data.get("messages")
            if not isinstance(items, list):
                raise ProviderError(f"messages of {address}: the answer has no list of messages")
            for item in items:
                email_id = item.get("id") if isinstance(item, dict) else None
                if not isinstance(email_id, str) or email_id not in ids:
                    raise ProviderError(f"messages of {address}: an answer for no id asked ({str(item)[:100]})")
                try:
                    found[email_id] = _message(item, what=f"message {email_id} of {address}")
                except ProviderError as error:  # this message's answer cannot be read: it alone fails
                    found[email_id] = ValueError(str(error))
        return found

    def watch(self, address: str, *, url: str, secret: str) -> int:
        try:
            data = self._call("PUT", f"{self._mailbox_path(address)}/watch", json={"url": url, "secret": secret})
        except _NotFound as error:
            raise ProviderError(f"watch {address}: {error}") from None
        return _int(data, "history_id")

    def send_email(self, payload: dict) -> dict:
        """POST /send_email (not part of MailProvider: inbound_connect --test and the demo put mail in with it)."""
        try:
            return self._call("POST", "/send_email", json=payload)
        except _NotFound as error:
            raise ProviderError(f"send_email: {error} (is INBOUND_SIMULATOR_ENABLED on at {self.base_url}?)") from None


def _message(data: object, *, what: str) -> ProviderMessage:
    try:
        raw = base64.urlsafe_b64decode(data["raw"] + "=" * (-len(data["raw"]) % 4))
        return ProviderMessage(
            email_id=str(data["id"]),
            history_id=int(data["history_id"]),
            raw=raw,
            internal_date=datetime.fromisoformat(data["internal_date"]),
        )
    except (KeyError, TypeError, ValueError, binascii.Error) as error:
        raise ProviderError(f"{what}: unexpected answer ({error!r})") from None


def _detail(answer: requests.Response) -> str:
    try:
        data = answer.json()
    except ValueError:
        return answer.text[:200]
    return str(data.get("detail", data))[:200] if isinstance(data, dict) else str(data)[:200]


def _int(data: dict, name: str) -> int:
    try:
        return int(data[name])
    except (KeyError, TypeError, ValueError):
        raise ProviderError(f"the answer has no integer {name!r}: {str(data)[:200]}") from None
