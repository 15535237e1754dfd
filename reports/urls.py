from django.urls import path

from annotations import converters  # noqa: F401 - registers <id:…>
from reports import views

urlpatterns = [
    path("staff/studies/<id:study_id>/report/", views.study_report_page, name="study_report"),
    path(
        "staff/studies/<id:study_id>/report/<str:name>",
        views.study_report_file,
        name="study_report_file",
    ),
    path(
        "staff/studies/<id:study_id>/results/",
        views.study_results_fragment,
        name="study_results",
    ),
    path(
        "staff/studies/<id:study_id>/conditions/",
        views.study_condition_sparsity,
        name="study_condition_sparsity",
    ),
]
