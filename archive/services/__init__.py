"""The archive's services (re-exported): messages and keys, storage, the queue, the loop, publishing, health."""

from archive.services.consumer import ArchiverControl, archive_batch, archive_message_handle, archive_run
from archive.services.health import archiver_health, archiver_health_server, archiver_heartbeat_write
from archive.services.messages import (
    ArchiveMessage,
    InvalidArchiveMessage,
    archive_message_body,
    archive_message_parse,
    key_component,
)
from archive.services.publish import archive_email_publish, archive_message_from_email
from archive.services.queue import (
    archive_dead_letter_queue_url,
    archive_message_send,
    archive_queue_depth,
    archive_queue_url,
    archive_queues_ensure,
)
from archive.services.storage import ArchiveStorage, LocalArchiveStorage, S3ArchiveStorage, archive_storage

__all__ = [
    "ArchiveMessage", "ArchiveStorage", "ArchiverControl", "InvalidArchiveMessage", "LocalArchiveStorage",
    "S3ArchiveStorage", "archive_batch", "archive_dead_letter_queue_url", "archive_email_publish",
    "archive_message_body", "archive_message_from_email", "archive_message_handle", "archive_message_parse",
    "archive_message_send", "archive_queue_depth", "archive_queue_url", "archive_queues_ensure", "archive_run",
    "archive_storage", "archiver_health", "archiver_health_server", "archiver_heartbeat_write", "key_component",
]  # fmt: skip
