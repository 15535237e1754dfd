from django.contrib.auth import views as auth_views
from django.urls import path

from annotations.views import rater, staff

urlpatterns = [
    path("", rater.home, name="home"),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("studies/<int:study_id>/rate/", rater.rate, name="rate"),
    path("assignments/<int:assignment_id>/judge/", rater.judge, name="judge"),
    path("staff/studies/", staff.study_list, name="study_list"),
    path("staff/studies/<int:study_id>/", staff.study_detail, name="study_detail"),
    path("staff/studies/<int:study_id>/progress/", staff.study_progress, name="study_progress"),
    path("staff/studies/<int:study_id>/generate/", staff.study_generate, name="study_generate"),
    path("staff/studies/<int:study_id>/cancel/", staff.study_cancel, name="study_cancel"),
    path("staff/studies/<int:study_id>/resume/", staff.study_resume, name="study_resume"),
]
