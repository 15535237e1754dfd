"""The worker's model is warm before its first timed generation."""

import subprocess
import sys

import pytest

pytestmark = pytest.mark.model

PROBE = """
import django, os
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
django.setup()
from inference import kernels
from annotations.model_cache import loaded_model
assert "module" not in kernels._state, "kernels built before the model was loaded"
loaded = loaded_model()
print("built" if kernels._state.get("module") is not None else "not built")
"""


def test_loading_the_workers_model_builds_the_kernels_first():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "built", (out.stdout, out.stderr[-2000:])
