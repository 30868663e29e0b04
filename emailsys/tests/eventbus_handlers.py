"""Handlers for the event bus's tests (stream "bustest" in emailsys/settings/test.py).

`record_run` appends one JSON line per run to the file named by the payload's "log": outbox id, key, start and
end times, worker and pid, so a test can check order and overlap across processes. Payload "sleep" holds the
handler that long; "fail" raises."""

import json
import os
import time

from celery import current_task


def record_run(*, event) -> None:
    started = time.time()
    time.sleep(float(event.payload.get("sleep", 0)))
    if event.payload.get("fail"):
        raise RuntimeError(f"asked to fail: {event.payload['fail']}")
    line = {
        "outbox_id": event.outbox_id,
        "event_id": event.id,
        "key": event.key,
        "kind": event.kind,
        "start": started,
        "end": time.time(),
        "pid": os.getpid(),
        "worker": getattr(current_task.request, "hostname", None) if current_task else None,
    }
    log = event.payload.get("log")
    if log:
        # One write of a short line to a file opened for appending: lines from several processes never interleave.
        with open(log, "a") as handle:
            handle.write(json.dumps(line) + "\n")
