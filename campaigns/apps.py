from django.apps import AppConfig


class CampaignsConfig(AppConfig):
    name = "campaigns"

    def ready(self) -> None:
        from celery.signals import worker_init

        from campaigns.metrics import register_campaign_collector
        from campaigns.services.live import campaign_live_register, live_renderers_warm

        campaign_live_register()
        register_campaign_collector()
        worker_init.connect(live_renderers_warm, weak=False, dispatch_uid="campaigns.live_renderers_warm")
