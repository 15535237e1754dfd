from django.apps import AppConfig


class ReportsConfig(AppConfig):
    """Reads a study into plain tables, builds its report with `analysis` and serves it."""

    name = "reports"
    default_auto_field = "django.db.models.BigAutoField"
