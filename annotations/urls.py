from django.contrib.auth import views as auth_views
from django.urls import path

from annotations import converters  # noqa: F401 - registers <id:…>
from annotations.views import auth, conditions, model_registry, rater, setup, staff

urlpatterns = [
    path("", rater.home, name="home"),
    path("login/", auth.login, name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("studies/<id:study_id>/rate/", rater.rate, name="rate"),
    path("assignments/<id:assignment_id>/judge/", rater.judge, name="judge"),
    path("studies/<id:study_id>/consent/", rater.consent, name="consent"),
    path("studies/<id:study_id>/complete/", rater.complete, name="complete"),
    path("p/<id:study_id>/", rater.prolific_entry, name="prolific_entry"),
    # Tokens come from secrets.token_urlsafe (a slug): anything else 404s before any query.
    path("invite/<slug:token>/", rater.invite_entry, name="invite_entry"),
    path("staff/studies/", staff.study_list, name="study_list"),
    path("staff/studies/new/", setup.study_new, name="study_new"),
    path("staff/models/", model_registry.model_list, name="model_list"),
    path(
        "staff/models/<id:entry_id>/validate/",
        model_registry.model_revalidate,
        name="model_revalidate",
    ),
    path("staff/conditions/fields/", conditions.condition_fields, name="condition_fields"),
    path("staff/conditions/add/", conditions.condition_add, name="condition_add"),
    path("staff/conditions/sweep/", conditions.condition_sweep, name="condition_sweep"),
    path(
        "staff/conditions/lambda-sweep/",
        conditions.condition_lambda_sweep,
        name="condition_lambda_sweep",
    ),
    path("staff/conditions/count/", conditions.condition_count, name="condition_count"),
    path("staff/studies/<id:study_id>/setup/", setup.study_setup, name="study_setup"),
    path(
        "staff/studies/<id:study_id>/calibration/",
        setup.study_calibration,
        name="study_calibration",
    ),
    path(
        "staff/studies/<id:study_id>/calibration/retry/",
        setup.study_calibration_retry,
        name="study_calibration_retry",
    ),
    path(
        "staff/studies/<id:study_id>/rater-title/",
        setup.study_rater_title,
        name="study_rater_title",
    ),
    path("staff/studies/<id:study_id>/launch/", setup.study_launch, name="study_launch"),
    path(
        "staff/studies/<id:study_id>/pairs/<id:pair_id>/gold/",
        setup.study_gold,
        name="study_gold",
    ),
    path(
        "staff/studies/<id:study_id>/gold/settings/",
        setup.study_gold_settings,
        name="study_gold_settings",
    ),
    path(
        "staff/studies/<id:study_id>/judge-pilot/",
        setup.study_judge_pilot,
        name="study_judge_pilot",
    ),
    path(
        "staff/studies/<id:study_id>/judge-pilot/progress/",
        setup.study_judge_pilot_progress,
        name="study_judge_pilot_progress",
    ),
    path("staff/studies/<id:study_id>/preview/", setup.study_preview, name="study_preview"),
    path("staff/studies/<id:study_id>/pause/", setup.study_pause, name="study_pause"),
    path("staff/studies/<id:study_id>/close/", setup.study_close, name="study_close"),
    path("staff/studies/<id:study_id>/invites/", setup.invite_new, name="invite_new"),
    path(
        "staff/studies/<id:study_id>/preferences.jsonl",
        setup.export_preferences,
        name="export_preferences",
    ),
    path("staff/studies/<id:study_id>/", staff.study_detail, name="study_detail"),
    path("staff/studies/<id:study_id>/progress/", staff.study_progress, name="study_progress"),
    path("staff/studies/<id:study_id>/generate/", staff.study_generate, name="study_generate"),
    path("staff/studies/<id:study_id>/servers/", staff.study_servers, name="study_servers"),
    path(
        "staff/studies/<id:study_id>/conditions/<id:condition_id>/serve/",
        staff.condition_server_start,
        name="condition_server_start",
    ),
    path(
        "staff/studies/<id:study_id>/servers/<id:server_id>/stop/",
        staff.condition_server_stop,
        name="condition_server_stop",
    ),
    path("staff/studies/<id:study_id>/cancel/", staff.study_cancel, name="study_cancel"),
    path("staff/studies/<id:study_id>/resume/", staff.study_resume, name="study_resume"),
]
