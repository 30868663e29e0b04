"""Classification of stored messages: exactly one result per message, however often or concurrently a message's
task runs (the result's unique key decides; only the insert that won publishes and counts)."""

import logging
import random
import socket
import sys
import time

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone
from django.utils.module_loading import import_string

from emailsys.celery import app as celery_app
from emailsys.db import rows_insert_new
from processing.classifier import Classifier, Verdict, classifier_get
from processing.models import EmailResult, InboundEmail
from processing.parsing import ParsedEmail, email_parse

logger = logging.getLogger(__name__)


def email_classify(*, email_pk: int) -> EmailResult | None:
    """Classifies the message unless it has a result; returns the new result, None when it had one (or the
    message is gone). Raises on a classifier error (the task retries: PROCESSOR_MAX_RETRIES,
    PROCESSOR_RETRY_DELAY_MS); after the last attempt the message is marked failed with the error."""
    results, errors = _classify(*_stored_read([email_pk]))
    if errors:
        raise errors[email_pk]
    return results[0] if results else None


def emails_classify(*, email_pks: list[int], unattempted_only: bool = False) -> list[int]:
    """Classifies every message of the batch that has no result (with `unattempted_only`, none tried before: the
    safety net behind emails_classify_stored); the pks whose classifier raised (their attempt counted: the caller
    retries them one by one, `classification_failures_handle`)."""
    _, errors = _classify(*_stored_read(email_pks, unattempted_only=unattempted_only))
    for email_pk, error in errors.items():  # any exception is this message's alone
        logger.error("classification of message %s failed", email_pk, exc_info=error)
    return list(errors)


def _stored_read(
    email_pks: list[int], *, unattempted_only: bool = False
) -> tuple[list[tuple[InboundEmail, ParsedEmail]], dict[int, Exception]]:
    """The messages without a result, parsed from their raw bytes, and the parse error of each that failed."""
    emails = InboundEmail.objects.select_related("mailbox").filter(pk__in=email_pks, result__isnull=True)
    if unattempted_only:
        emails = emails.filter(attempts=0)
    items, errors = [], {}
    for email in emails:
        try:
            items.append((email, email_parse(bytes(email.raw))))
        except Exception as error:  # noqa: BLE001 - this message's alone
            errors[email.pk] = error
    return items, errors


def emails_classify_stored(*, items: list[tuple[InboundEmail, ParsedEmail]], queue: str) -> None:
    """Messages the sync has just committed, classified at once in its process from the parsed form it already has:
    no task to wait for, no second read of the raw bytes, no second parse. A message whose classifier raised goes on
    to its retries; should this process die first, the batch's safety-net tasks (ingest.emails_store_to_classify)
    classify what it left. Never raises: the sync has stored the messages, and that stands."""
    try:
        _, errors = _classify(items, {})
    except Exception:  # noqa: BLE001 - the safety-net tasks take these messages
        logger.exception("classification of %d stored messages failed; their tasks take them", len(items))
        return
    for email_pk, error in errors.items():
        logger.error("classification of message %s failed", email_pk, exc_info=error)
    classification_failures_handle(list(errors), queue=queue)


def classification_failures_handle(email_pks: list[int], *, queue: str) -> None:
    """Messages whose first attempt failed: each goes on alone in `classify_email`, as its first retry
    (PROCESSOR_RETRY_DELAY_MS, then doubling; PROCESSOR_MAX_RETRIES in all), or is marked failed at once when no
    retries are allowed."""
    if not email_pks:
        return
    if settings.PROCESSOR_MAX_RETRIES < 1:
        for email_pk in email_pks:
            email_fail(email_pk=email_pk, error="classification failed (no retries: PROCESSOR_MAX_RETRIES)")
        return
    delay = settings.PROCESSOR_RETRY_DELAY_MS / 1000
    for email_pk in email_pks:  # by name: the tasks import the services, never the other way round
        celery_app.send_task("processing.classify_email", args=[email_pk], queue=queue, retries=1,
                             countdown=delay * (1 + random.random() / 4), ignore_result=True)  # fmt: skip


def _classify(
    items: list[tuple[InboundEmail, ParsedEmail]], errors: dict[int, Exception]
) -> tuple[list[EmailResult], dict[int, Exception]]:
    """The parsed messages classified, their results inserted in one statement (ON CONFLICT DO NOTHING): a message
    whose result another run inserted first is skipped, and only the run whose insert won runs the handlers and
    publishes. Returns the new results and the error per message that failed, `errors` (earlier failures of the
    batch) included (a failed attempt counts here; one that works, in the results' own UPDATE)."""
    if not items and not errors:
        return [], {}
    classifier = classifier_get()
    done: list[tuple[InboundEmail, EmailResult, ParsedEmail, float]] = []
    errors = dict(errors)
    for email, parsed in items:
        try:
            verdict, elapsed = _verdict(classifier, parsed)
        except Exception as error:  # noqa: BLE001 - handed to the caller, per message
            errors[email.pk] = error
            continue
        done.append((email, EmailResult(email=email, **_result_fields(classifier, verdict, elapsed)), parsed, elapsed))
    if errors:
        InboundEmail.objects.filter(pk__in=list(errors)).update(attempts=F("attempts") + 1)
    if not done:
        return [], errors
    with transaction.atomic():
        won = {
            result.email_id for result in rows_insert_new(EmailResult, [item[1] for item in done], unique=("email",))
        }
        done = [item for item in done if item[0].pk in won]
        InboundEmail.objects.filter(pk__in=won).update(
            status=InboundEmail.Status.CLASSIFIED, last_error="", attempts=F("attempts") + 1
        )
        for email, _, _, _ in done:
            email.status = InboundEmail.Status.CLASSIFIED
        _handlers_run([(email, result, parsed) for email, result, parsed, _ in done])
        transaction.on_commit(lambda: _processed_many([(email, result, elapsed) for email, result, _, elapsed in done]))
    return [result for _, result, _, _ in done], errors


def email_reclassify(*, email: InboundEmail) -> EmailResult:
    """An operator's re-classify: replaces the result in one transaction (with the current classifier)."""
    classifier = classifier_get()
    verdict, elapsed = _verdict(classifier, email_parse(bytes(email.raw)))
    with transaction.atomic():
        InboundEmail.objects.select_for_update().filter(pk=email.pk).first()  # serialises with a running task
        EmailResult.objects.filter(email_id=email.pk).delete()
        result = EmailResult.objects.create(email=email, **_result_fields(classifier, verdict, elapsed))
        InboundEmail.objects.filter(pk=email.pk).update(status=InboundEmail.Status.CLASSIFIED, last_error="")
        email.status = InboundEmail.Status.CLASSIFIED
        transaction.on_commit(lambda: _processed(email, result, elapsed))
    return result


def email_fail(*, email_pk: int, error: str) -> bool:
    """The last attempt failed: the message is marked failed with the error (unless a result exists after all).
    True when it was marked."""
    from processing.metrics import inbound_count

    marked = (
        InboundEmail.objects.filter(pk=email_pk, result__isnull=True)
        .update(status=InboundEmail.Status.FAILED, last_error=error[:2000])
    )  # fmt: skip
    if marked:
        inbound_count("failed")
    return bool(marked)


def processor_id(classifier: Classifier) -> str:
    """ "<worker node>/<classifier name>@<model version>": which process and model produced a result."""
    from celery import current_task

    node = ""
    if current_task:  # a proxy: false outside a task
        node = getattr(current_task.request, "hostname", None) or ""
    return f"{node or socket.gethostname()}/{classifier.name}@{classifier.version}"[:200]


def _verdict(classifier: Classifier, parsed: ParsedEmail) -> tuple[Verdict, float]:
    started = time.perf_counter()
    verdict = classifier.classify(parsed)
    return verdict, time.perf_counter() - started


def _handlers_run(items: list[tuple[InboundEmail, EmailResult, ParsedEmail]]) -> None:
    """INBOUND_RESULT_HANDLERS (other apps' reactions: a reply stops a sequence, a bounce suppresses), in the
    transaction that inserts the results, so each runs exactly once per message and atomically with it (imported
    by name: processing never imports the apps that react to it). A handler runs over the batch in one savepoint;
    when it raises, that savepoint is rolled back and the handler runs again message by message, each in a savepoint
    of its own: the failing message's error is logged and kept on its last_error, and every result still commits
    (a savepoint per message always cost two round trips per message and handler)."""
    errors: dict[int, list[str]] = {}
    for path in settings.INBOUND_RESULT_HANDLERS:
        handler = import_string(path)
        try:
            with transaction.atomic():
                for email, result, parsed in items:
                    handler(email=email, result=result, parsed=parsed)
            continue
        except Exception:  # noqa: BLE001 - which message failed: each alone finds out
            if len(items) == 1:
                logger.exception("inbound result handler %s failed for message %s", path, items[0][0].pk)
                errors.setdefault(items[0][0].pk, []).append(_handler_error(path))
                continue
        for email, result, parsed in items:
            try:
                with transaction.atomic():
                    handler(email=email, result=result, parsed=parsed)
            except Exception:  # noqa: BLE001 - one message's reaction fails alone
                logger.exception("inbound result handler %s failed for message %s", path, email.pk)
                errors.setdefault(email.pk, []).append(_handler_error(path))
    for email_pk, texts in errors.items():
        InboundEmail.objects.filter(pk=email_pk).update(last_error="\n".join(texts)[:2000])


def _handler_error(path: str) -> str:
    error = sys.exc_info()[1]
    return f"{path}: {type(error).__name__}: {error}"


def _result_fields(classifier: Classifier, verdict: Verdict, elapsed: float) -> dict:
    return {
        "classification": verdict.classification,
        "confidence": min(1.0, max(0.0, float(verdict.confidence))),
        "processor_id": processor_id(classifier),
        "model_version": str(classifier.version)[:100],
        "processing_time_ms": elapsed * 1000,
        "processed_at": timezone.now(),
        "signals": verdict.signals,
    }


def _processed(email: InboundEmail, result: EmailResult, elapsed: float) -> None:
    _processed_many([(email, result, elapsed)])


def _processed_many(done: list[tuple[InboundEmail, EmailResult, float]]) -> None:
    from processing.metrics import classifications_record
    from processing.services import events

    if not done:
        return
    events.emails_processed([(email, result) for email, result, _ in done])
    classifications_record([(result.classification, elapsed) for _, result, elapsed in done])
