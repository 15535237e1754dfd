"""`analysis` is statistics on plain tables: importing all of it loads neither Django nor
any app of the project, nor the engine. It may use `evaluation` (a plain package, no Django)
for the one pass@k estimator, so that Pass@1 has a single computation."""

import os
import subprocess
import sys
from pathlib import Path

import analysis

APPS = ("django", "annotations", "reports", "webapp", "inference")


def test_every_analysis_module_imports_without_django_or_an_app():
    modules = sorted(
        f"analysis.{path.stem}"
        for path in Path(analysis.__file__).parent.glob("*.py")
        if path.stem != "__init__"
    )
    assert "analysis.report" in modules, modules
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        f"loaded = sorted({{m.split('.')[0] for m in sys.modules}} & set({APPS!r}))\n"
        "print(','.join(loaded))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(Path(analysis.__file__).parent.parent)},
    )
    assert result.returncode == 0, f"importing analysis failed:\n{result.stderr}"
    loaded = result.stdout.strip()
    assert not loaded, f"importing every analysis module loaded {loaded}: analysis must stay pure"
