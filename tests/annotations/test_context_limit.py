"""The setup page's and the import's context check run in the web process: never torch."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_checking_prompts_in_the_web_process_loads_no_torch(tiny_model_configured, tmp_path):
    code = (
        "import sys, django\n"
        "django.setup()\n"
        "import webapp.urls, annotations.views.setup\n"
        "from annotations.context_limit import prompts_overflow\n"
        "refused = prompts_overflow(['w1 w2', ' '.join(['w3'] * 300)], max_new_tokens=16)\n"
        "assert refused[0] is None and '> 256' in refused[1], refused\n"
        "print('torch' in sys.modules)\n"
    )
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "webapp.settings",
        "PYTHONPATH": str(ROOT),
        "VAR_DIR": str(tmp_path / "var"),
        "MODEL_PATH": str(tiny_model_configured),
        "MODEL_CACHE_DIR": str(tmp_path / "cache"),
    }
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "False", "the web process imported torch"
