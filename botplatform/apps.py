from django.apps import AppConfig


class BotplatformConfig(AppConfig):
    name = "botplatform"
    verbose_name = "Projects and bots"

    def ready(self) -> None:
        from botplatform.bots import signals_connect

        signals_connect()
