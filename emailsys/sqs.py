"""The SQS FIFO queue behind the event bus: a cached boto3 client, the queue's URL, and its creation with a
dead-letter queue. Credentials come from the standard AWS environment variables or the instance role.

https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/sqs-dead-letter-queues.html
"""

import functools
import json

import boto3
from botocore.config import Config
from django.conf import settings


def sqs_configured() -> bool:
    """Off (events go straight to Celery) unless a queue is named."""
    return bool(settings.SQS_QUEUE_URL or settings.SQS_QUEUE_NAME)


@functools.cache
def _client(endpoint_url: str, region: str, read_timeout: int):
    config = Config(connect_timeout=5, read_timeout=read_timeout, retries={"mode": "standard", "max_attempts": 3})
    return boto3.client("sqs", endpoint_url=endpoint_url or None, region_name=region, config=config)


def sqs_client():
    """One client per process and configuration (boto3 clients are thread-safe and slow to create)."""
    # The read timeout must outlast a long poll.
    return _client(settings.SQS_ENDPOINT_URL, settings.SQS_REGION, settings.SQS_WAIT_SECONDS + 15)


@functools.cache
def _queue_url(endpoint_url: str, region: str, name: str) -> str:
    return sqs_client().get_queue_url(QueueName=name)["QueueUrl"]


def sqs_queue_url() -> str:
    return settings.SQS_QUEUE_URL or _queue_url(settings.SQS_ENDPOINT_URL, settings.SQS_REGION, settings.SQS_QUEUE_NAME)


def sqs_dead_letter_queue_name(name: str) -> str:
    return f"{name.removesuffix('.fifo')}-dlq.fifo"


def sqs_queues_ensure(*, name: str, max_receive_count: int, visibility_timeout: int) -> tuple[str, str]:
    """Creates the FIFO queue and its dead-letter queue, or updates their attributes (safe to run again).
    Returns (queue URL, dead-letter queue URL).

    Attributes are set after creation because CreateQueue refuses an existing name with other attributes."""
    if not name.endswith(".fifo"):
        raise ValueError(f"SQS FIFO queue names end with .fifo: {name!r}")
    client = sqs_client()
    dead_letter_url = client.create_queue(QueueName=sqs_dead_letter_queue_name(name), Attributes={"FifoQueue": "true"})[
        "QueueUrl"
    ]
    client.set_queue_attributes(QueueUrl=dead_letter_url, Attributes={"MessageRetentionPeriod": "1209600"})
    dead_letter_arn = client.get_queue_attributes(QueueUrl=dead_letter_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    url = client.create_queue(QueueName=name, Attributes={"FifoQueue": "true"})["QueueUrl"]
    redrive = {"deadLetterTargetArn": dead_letter_arn, "maxReceiveCount": str(max_receive_count)}
    client.set_queue_attributes(
        QueueUrl=url,
        Attributes={
            "VisibilityTimeout": str(visibility_timeout),
            "ContentBasedDeduplication": "false",
            "RedrivePolicy": json.dumps(redrive),
        },
    )
    return url, dead_letter_url


def sqs_message_send(*, queue_url: str, body: str, group_id: str, deduplication_id: str) -> str:
    """Returns SQS's message id. A repeated deduplication id within 5 minutes is accepted and dropped by SQS."""
    response = sqs_client().send_message(
        QueueUrl=queue_url, MessageBody=body, MessageGroupId=group_id, MessageDeduplicationId=deduplication_id
    )
    return response["MessageId"]
