from django.apps import AppConfig


class EmailsysConfig(AppConfig):
    """The project package as an app: operations (health, metrics, live updates, mail capture)."""

    name = "emailsys"
    verbose_name = "Operations"

    def ready(self) -> None:
        from emailsys.metrics import register_collector

        register_collector()
