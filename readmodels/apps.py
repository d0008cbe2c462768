from django.apps import AppConfig


class ReadmodelsConfig(AppConfig):
    name = "readmodels"
    verbose_name = "Read models"

    def ready(self) -> None:
        from events.store import on_append

        from .projector import project_inline

        on_append(project_inline)
