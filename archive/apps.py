from django.apps import AppConfig


class ArchiveConfig(AppConfig):
    """The SQS → object storage archiver (the seed's email processor): no models, services and commands only."""

    name = "archive"
