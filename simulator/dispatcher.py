"""Delivers the simulator's notifications in the background, so `send_email` answers at once: one thread per web
process takes notifications from a queue (after their message committed), applies the faults — drop, duplicate
(the same webhook-id, as a provider's retry, or sometimes a new id for the same history id), delay, reorder (hold a
few and shuffle) — with a seeded random generator, and POSTs each signed per Standard Webhooks. A non-2xx answer or
a connection error is retried a few times with backoff, then given up: notifications are hints.

Items carry everything they need (URL, secret, faults), so the threads never touch the database."""

import dataclasses
import heapq
import itertools
import json
import logging
import queue
import random
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime

import urllib3
from standardwebhooks.webhooks import Webhook

logger = logging.getLogger(__name__)

DELIVERY_ATTEMPTS = 4  # the first POST and 3 retries
RETRY_BASE_SECONDS = 0.2  # doubled each retry
POST_TIMEOUT_SECONDS = 5.0
REORDER_HOLD = 4  # notifications held before a shuffle...
REORDER_HOLD_SECONDS = 0.1  # ...or after this long
SENDER_THREADS = 8


@dataclass(frozen=True)
class Notification:
    url: str
    secret: str
    address: str
    history_id: int
    faults: dict
    webhook_id: str = field(default_factory=lambda: f"msg_{uuid.uuid4().hex}")
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def body(self) -> str:
        return json.dumps(
            {
                "type": "mailbox.history",
                "email_address": self.address,
                "history_id": self.history_id,
                "timestamp": self.created_at.isoformat(),
            }
        )


class Dispatcher:
    def __init__(self) -> None:
        self._inbox: queue.Queue[Notification] = queue.Queue()
        self._due: list[tuple[float, int, Notification]] = []
        self._counter = itertools.count()
        self._held: list[Notification] = []
        self._held_since = 0.0
        self._rng = random.Random()
        self._faults_key = ""
        self._senders = ThreadPoolExecutor(max_workers=SENDER_THREADS, thread_name_prefix="simulator-notify")
        # urllib3's pool (keep-alive connections, shared by the sender threads) without requests' layer on top: the
        # simulator shares the machine with what it stands in front of, and requests cost a third of a delivery.
        self._http = urllib3.PoolManager(maxsize=SENDER_THREADS, retries=False, timeout=POST_TIMEOUT_SECONDS)
        self.sent = 0  # POSTs answered 2xx, for tests and logs
        threading.Thread(target=self._run, name="simulator-dispatcher", daemon=True).start()

    def enqueue(self, notification: Notification) -> None:
        self._inbox.put(notification)

    def _reseed(self, faults: dict) -> None:
        key = json.dumps(faults, sort_keys=True)  # the version alone repeats once the table is emptied (tests)
        if key != self._faults_key:
            self._faults_key = key
            self._rng = random.Random(faults.get("seed"))

    def _accept(self, notification: Notification) -> None:
        faults = notification.faults
        self._reseed(faults)
        if self._rng.random() < faults.get("drop", 0.0):
            logger.info("simulator: dropped notification of history %s", notification.history_id)
            return
        copies = [notification]
        if self._rng.random() < faults.get("duplicate", 0.0):
            # Half the duplicates are a retry of the same delivery (same id), half a second event for the same id.
            same_id = self._rng.random() < 0.5
            again = notification if same_id else dataclasses.replace(notification, webhook_id=f"msg_{uuid.uuid4().hex}")
            copies.append(again)
        if faults.get("reorder"):
            if not self._held:
                self._held_since = time.monotonic()
            self._held.extend(copies)
            if len(self._held) >= REORDER_HOLD:
                self._release_held()
            return
        if self._held:  # faults changed: what was held goes out first, not after the next messages
            self._release_held()
        for copy in copies:
            self._schedule(copy)

    def _release_held(self) -> None:
        held, self._held = self._held, []
        self._rng.shuffle(held)
        for offset, notification in enumerate(held):
            self._schedule(notification, extra_seconds=offset * 0.005)  # keep the shuffled order on the wire

    def _schedule(self, notification: Notification, *, extra_seconds: float = 0.0) -> None:
        low, high = notification.faults.get("delay_ms", [0, 0])
        delay = (self._rng.uniform(low, high) / 1000.0 if high else 0.0) + extra_seconds
        heapq.heappush(self._due, (time.monotonic() + delay, next(self._counter), notification))

    def _run(self) -> None:
        while True:
            now = time.monotonic()
            while self._due and self._due[0][0] <= now:
                _, _, notification = heapq.heappop(self._due)
                self._senders.submit(self._deliver, notification)
            if self._held and now - self._held_since >= REORDER_HOLD_SECONDS:
                self._release_held()
            waits = [self._due[0][0] - now] if self._due else []
            if self._held:
                waits.append(self._held_since + REORDER_HOLD_SECONDS - now)
            try:
                item = self._inbox.get(timeout=max(0.001, min(waits)) if waits else 1.0)
            except queue.Empty:
                continue
            try:
                self._accept(item)
            except Exception:  # noqa: BLE001 - the dispatcher must survive anything
                logger.exception("simulator: could not schedule a notification")

    def _deliver(self, notification: Notification) -> None:
        body = notification.body()
        webhook = Webhook(notification.secret)
        for attempt in range(DELIVERY_ATTEMPTS):
            now = datetime.now(UTC)
            headers = {
                "content-type": "application/json",
                "webhook-id": notification.webhook_id,
                "webhook-timestamp": str(int(now.timestamp())),
                "webhook-signature": webhook.sign(notification.webhook_id, now, body),
            }
            try:
                answer = self._http.request("POST", notification.url, body=body.encode(), headers=headers)
                if 200 <= answer.status < 300:
                    self.sent += 1
                    return
                problem = f"HTTP {answer.status}"
            except urllib3.exceptions.HTTPError as error:
                problem = f"{type(error).__name__}: {error}"
            if attempt + 1 < DELIVERY_ATTEMPTS:
                time.sleep(RETRY_BASE_SECONDS * 2**attempt * random.uniform(0.8, 1.2))
        logger.warning(
            "simulator: gave up notifying %s of history %s for %s (%s)",
            notification.url,
            notification.history_id,
            notification.address,
            problem,
        )


_dispatcher: Dispatcher | None = None
_dispatcher_lock = threading.Lock()


def dispatcher_get() -> Dispatcher:
    """This process's dispatcher, started on first use."""
    global _dispatcher
    with _dispatcher_lock:
        if _dispatcher is None:
            _dispatcher = Dispatcher()
        return _dispatcher


def notification_enqueue(notification: Notification) -> None:
    dispatcher_get().enqueue(notification)
