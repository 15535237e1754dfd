"""The Models page and the registry's writes (annotations/views/model_registry.py,
services/model_registry.py, tasks.model_validate): staff register a model, a worker's
`describe()` of the path makes it valid or invalid with the reason on the page, and which
workers serve which models (their heartbeat)."""

from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from annotations import selectors, services, tasks
from annotations.models import ModelEntry
from tests.support.models import save_tiny

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_client(users):
    client = Client()
    client.force_login(users[0])
    return client


def test_raters_cannot_reach_the_models_page(users):
    client = Client()
    client.force_login(users[1])
    assert client.get(reverse("model_list")).status_code == 302  # to the admin log-in
    assert client.post(reverse("model_list"), {"key": "m", "path": "/m"}).status_code == 302
    assert not ModelEntry.objects.exists()


def test_staff_register_a_model_that_waits_for_a_worker_holding_it(
    staff_client, users, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks() as sent:
        response = staff_client.post(reverse("model_list"), {
            "key": "smol-dpo", "path": "/models/dpo", "display_name": "SmolLM2 DPO",
        })
    assert response.status_code == 302
    entry = ModelEntry.objects.get(key="smol-dpo")
    assert (entry.status, entry.path, entry.created_by) == ("pending", "/models/dpo", users[0])
    assert len(sent) == 1, "its validation is sent to the model's queue once committed"
    page = staff_client.get(reverse("model_list")).content.decode()
    assert "waiting for a worker with model smol-dpo" in page
    assert "MODEL_KEYS=smol-dpo" in page


@pytest.mark.parametrize("key, path, error", [
    ("default", "/m", "is the deployment"),
    ("Bad Key", "/m", "lower-case letters"),
    ("ok", "relative/dir", "absolute path"),
])
def test_a_bad_registration_is_a_form_error(staff_client, key, path, error):
    response = staff_client.post(reverse("model_list"), {"key": key, "path": path})
    assert response.status_code == 400
    assert error in response.content.decode()
    assert not ModelEntry.objects.exists()


def test_a_key_is_registered_once(staff_client):
    ModelEntry.objects.create(key="m", path="/m")
    response = staff_client.post(reverse("model_list"), {"key": "m", "path": "/other"})
    assert response.status_code == 400
    assert ModelEntry.objects.get(key="m").path == "/m"


def test_a_worker_validates_a_model_it_can_load(tmp_path, settings, staff_client):
    settings.MODEL_CACHE_DIR = tmp_path / "cache"
    path = save_tiny(tmp_path / "tiny")
    entry = services.model_register(key="tiny", path=str(path))
    assert tasks.model_validate(entry.id) == "valid"
    entry.refresh_from_db()
    assert entry.status == "valid" and entry.error == ""
    entry.full_clean()  # the stored description passes the field's own validator
    assert entry.description["architecture"] == "llama"
    assert entry.description["shape"]["num_hidden_layers"] > 0
    assert entry.fingerprint and "path" not in entry.description
    assert tasks.model_validate(entry.id) == "skipped", "validated once"
    assert [m.key for m in selectors.models_offered()] == ["tiny"]
    page = staff_client.get(reverse("model_list")).content.decode()
    assert "llama" in page and entry.fingerprint[:10] in page


def test_a_path_no_worker_can_load_is_a_clear_error_on_the_page(tmp_path, staff_client):
    missing = tmp_path / "nothing-here"
    entry = services.model_register(key="ghost", path=str(missing))
    assert tasks.model_validate(entry.id) == "invalid"
    entry.refresh_from_db()
    assert entry.status == "invalid"
    assert entry.error.startswith(f"no worker could load {missing}: no model at {missing}")
    assert selectors.models_offered() == []
    page = staff_client.get(reverse("model_list")).content.decode()
    assert f"no worker could load {missing}" in page
    # Fixed on the machine: "Validate again" makes it pending and sends the job again.
    save_tiny(missing)
    staff_client.post(reverse("model_revalidate", args=[entry.id]))
    entry.refresh_from_db()
    assert (entry.status, entry.error) == ("pending", "")
    assert tasks.model_validate(entry.id) == "valid"


def test_a_live_heartbeat_says_which_models_a_worker_serves():
    now = timezone.now()
    services.worker_heartbeat_record(name="gpu@a", model_keys=["big"], now=now)
    services.worker_heartbeat_record(name="cpu@b", model_keys=["default", "big"], now=now)
    services.worker_heartbeat_record(name="old@c", model_keys=["small"],
                                     now=now - timedelta(hours=1))
    assert selectors.model_workers(now=now) == {"big": ["cpu@b", "gpu@a"], "default": ["cpu@b"]}
    services.worker_heartbeat_forget(name="gpu@a")
    assert selectors.model_workers(now=now) == {"big": ["cpu@b"], "default": ["cpu@b"]}
    services.worker_heartbeat_record(name="old@c", model_keys=["small"], now=now)
    assert selectors.model_workers(now=now)["small"] == ["old@c"], "a fresh beat: live again"
