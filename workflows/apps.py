from django.apps import AppConfig


class WorkflowsConfig(AppConfig):
    name = "workflows"
    verbose_name = "Workflows"

    def ready(self) -> None:
        # Connects the trigger-cache invalidation signals in every process.
        from workflows.engine import triggers  # noqa: F401
        from workflows.gauges import gauges_register

        gauges_register()  # execution counts on /metrics
        # Actions made outside an update (delays, HTTP results, broadcasts): simulator
        # conversations to their transcript, the rest to the Telegram transport.
        from botplatform.telegram.sender import actions_deliver
        from workflows.delivery import delivery_register
        from workflows.simulator import simulator_routed

        delivery_register(simulator_routed(actions_deliver))
        # A till's redemption that needs the customer's Yes: asked in their chat.
        from users.holds import approval_sender_register
        from workflows.hold_approval import hold_approval_send

        approval_sender_register(hold_approval_send)
