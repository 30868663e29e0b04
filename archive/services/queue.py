"""The archive's SQS standard queue and its dead-letter queue. The client is the event bus's (emailsys.sqs:
SQS_ENDPOINT_URL, SQS_REGION, standard AWS credentials); the queue is ARCHIVE_QUEUE_URL or ARCHIVE_QUEUE_NAME.

https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/sqs-dead-letter-queues.html
"""

import functools
import json

from django.conf import settings

from emailsys.sqs import sqs_client


def archive_dead_letter_queue_name(name: str) -> str:
    return f"{name}-dlq"


def archive_queues_ensure(*, name: str, max_receive_count: int, visibility_timeout: int) -> tuple[str, str]:
    """Creates the standard queue and its dead-letter queue, or updates their attributes (safe to run again).
    Returns (queue URL, dead-letter queue URL). A message received `max_receive_count` times without being
    deleted moves to the dead-letter queue, where it is kept 14 days."""
    if name.endswith(".fifo"):
        raise ValueError(f"the archive queue is a standard queue; {name!r} names a FIFO queue")
    client = sqs_client()
    dead_letter_url = client.create_queue(QueueName=archive_dead_letter_queue_name(name))["QueueUrl"]
    client.set_queue_attributes(QueueUrl=dead_letter_url, Attributes={"MessageRetentionPeriod": "1209600"})
    dead_letter_arn = client.get_queue_attributes(QueueUrl=dead_letter_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    url = client.create_queue(QueueName=name)["QueueUrl"]
    redrive = {"deadLetterTargetArn": dead_letter_arn, "maxReceiveCount": str(max_receive_count)}
    client.set_queue_attributes(
        QueueUrl=url,
        Attributes={"VisibilityTimeout": str(visibility_timeout), "RedrivePolicy": json.dumps(redrive)},
    )
    return url, dead_letter_url


@functools.cache
def _queue_url(endpoint_url: str, region: str, name: str) -> str:
    return sqs_client().get_queue_url(QueueName=name)["QueueUrl"]


def archive_queue_url() -> str:
    return settings.ARCHIVE_QUEUE_URL or _queue_url(
        settings.SQS_ENDPOINT_URL, settings.SQS_REGION, settings.ARCHIVE_QUEUE_NAME
    )


def archive_dead_letter_queue_url(queue_url: str) -> str | None:
    """The queue's dead-letter queue, from its redrive policy; None when it has none."""
    attributes = sqs_client().get_queue_attributes(QueueUrl=queue_url, AttributeNames=["RedrivePolicy"])
    policy = attributes.get("Attributes", {}).get("RedrivePolicy")
    if not policy:
        return None
    arn = json.loads(policy)["deadLetterTargetArn"]  # arn:aws:sqs:<region>:<account>:<name>
    *_, account, name = arn.split(":")
    return sqs_client().get_queue_url(QueueName=name, QueueOwnerAWSAccountId=account)["QueueUrl"]


def archive_queue_depth(queue_url: str) -> dict[str, int]:
    """{"visible": n, "in_flight": n}: SQS's approximate counts."""
    attributes = sqs_client().get_queue_attributes(
        QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return {
        "visible": int(attributes.get("ApproximateNumberOfMessages", 0)),
        "in_flight": int(attributes.get("ApproximateNumberOfMessagesNotVisible", 0)),
    }


def archive_message_send(*, body: str, queue_url: str | None = None) -> str:
    """Puts one message (the seed's shape) on the archive queue; returns SQS's message id."""
    return sqs_client().send_message(QueueUrl=queue_url or archive_queue_url(), MessageBody=body)["MessageId"]
