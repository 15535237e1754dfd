from django.contrib.auth import views as auth_views
from django.urls import path

from annotations import views

urlpatterns = [
    path("", views.home, name="home"),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("studies/<int:study_id>/rate/", views.rate, name="rate"),
    path("assignments/<int:assignment_id>/judge/", views.judge, name="judge"),
    path("staff/studies/", views.study_list, name="study_list"),
    path("staff/studies/<int:study_id>/", views.study_detail, name="study_detail"),
    path("staff/studies/<int:study_id>/progress/", views.study_progress, name="study_progress"),
    path("staff/studies/<int:study_id>/generate/", views.study_generate, name="study_generate"),
]
