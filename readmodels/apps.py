from django.apps import AppConfig


class ReadmodelsConfig(AppConfig):
    name = "readmodels"
    verbose_name = "Read models"

    def ready(self) -> None:
        from events.store import on_append

        from .projector import inline_stream_types, project_inline

        # Appends to streams that no inline projection reads run alone.
        on_append(project_inline, stream_types=inline_stream_types())
