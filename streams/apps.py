from django.apps import AppConfig


class StreamsConfig(AppConfig):
    name = "streams"
    verbose_name = "Watch routes"

    def ready(self) -> None:
        from readmodels.topics import on_change_committed, on_topics_reset

        from .relay import announce, announce_resets

        on_change_committed(announce)
        on_topics_reset(announce_resets)
