from django.apps import AppConfig


class WorkordersConfig(AppConfig):
    name = "workorders"

    def ready(self) -> None:
        from campaigns.services.accounts import account_limits_reset
        from workorders.metrics import register_workorder_collector
        from workorders.services.live import workorder_live_register
        from workorders.services.sweep import workorders_wake_for_account

        def wake(sender, *, account_id: int, **kwargs) -> list[int]:
            return workorders_wake_for_account(account_id=account_id)

        workorder_live_register()
        register_workorder_collector()  # /metrics: step durations, work orders by status
        account_limits_reset.connect(wake, weak=False, dispatch_uid="workorders.wake_for_account")
