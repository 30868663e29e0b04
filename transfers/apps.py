from django.apps import AppConfig


class TransfersConfig(AppConfig):
    """Files in and out: import jobs (uploaded files run by a worker, reported row by row) and CSV exports."""

    name = "transfers"

    def ready(self) -> None:
        from transfers.live import import_job_live_register

        import_job_live_register()
