from django.apps import AppConfig


class WorkflowsConfig(AppConfig):
    name = "workflows"
    verbose_name = "Workflows"

    def ready(self) -> None:
        # Connects the trigger-cache invalidation signals in every process.
        from workflows.engine import triggers  # noqa: F401
        from workflows.gauges import gauges_register

        gauges_register()  # execution counts on /metrics
