"""The log-in page and the admin's log-in form, both throttled (see `annotations.throttle`)."""

from __future__ import annotations

from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.forms import AuthenticationForm
from django.contrib.auth.views import LoginView
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.http import HttpResponse

from annotations import throttle

INVALID_LOGIN = "Your username and password didn't match. Please try again."


class ThrottledLoginMixin:
    """Refuses any attempt while the username or the client's address is locked out,
    counts each attempt before its password is checked (a failure stays counted) and
    forgets a username's failures once it logs in."""

    def clean(self) -> dict:
        username = self.cleaned_data.get("username")
        if username is None or not self.cleaned_data.get("password"):
            return super().clean()  # a field error; no password was checked
        ip = throttle.client_ip(self.request) if self.request is not None else ""
        if not throttle.login_attempt_begin(username=username, ip=ip):
            raise ValidationError(throttle.locked_message(), code="locked")
        try:
            cleaned = super().clean()
        except ValidationError:
            raise  # a failure: the place it took in the counts stays
        except BaseException:
            throttle.login_attempt_abandon(username=username, ip=ip)
            raise
        throttle.login_success_record(username=username, ip=ip)
        return cleaned


class LoginForm(ThrottledLoginMixin, AuthenticationForm):
    error_messages = {**AuthenticationForm.error_messages, "invalid_login": INVALID_LOGIN}


class AdminLoginForm(ThrottledLoginMixin, AdminAuthenticationForm):
    """`admin.site.login_form`: the admin's own log-in page is throttled the same way."""


class ThrottledLoginView(LoginView):
    form_class = LoginForm

    def form_invalid(self, form: AuthenticationForm) -> HttpResponse:
        response = super().form_invalid(form)
        if form.has_error(NON_FIELD_ERRORS, "locked"):
            response.status_code = 429  # Too Many Requests
        return response


login = ThrottledLoginView.as_view()
