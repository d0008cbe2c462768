from django.apps import AppConfig


class StreamsConfig(AppConfig):
    name = "streams"
    verbose_name = "Watch routes"

    def ready(self) -> None:
        from readmodels.topics import on_change_committed

        from .relay import announce

        on_change_committed(announce)
