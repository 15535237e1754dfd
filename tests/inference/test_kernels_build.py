"""The compiled kernels' build: a builder killed half-way never blocks the next load."""

import subprocess
import sys

from inference import kernels

LOAD = "from inference.kernels import compiled_kernels; assert compiled_kernels() is not None"


def test_a_lock_left_by_a_killed_build_does_not_hang_the_next_load():
    if kernels.compiled_kernels() is None:  # no compiler here: nothing is built, nothing locks
        return
    directory = kernels.build_directory(kernels._build_name())
    # What torch's FileBaton leaves when its process dies mid-build (seen: a test run hung on
    # it for 14 minutes, torch waiting for the file to go away).
    (directory / "lock").touch()
    done = subprocess.run([sys.executable, "-c", LOAD], timeout=300, capture_output=True)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert not (directory / "lock").exists()


def test_each_checkout_builds_in_its_own_directory(monkeypatch, tmp_path):
    """torch writes the sources' paths into build.ninja: two checkouts of one version sharing a
    directory would rebuild over each other at each load."""
    name = kernels._build_name()
    here = kernels.build_directory(name)
    assert here.name.startswith(name) and here == kernels.build_directory(name)
    monkeypatch.setattr(kernels, "_CSRC", tmp_path / "other-checkout" / "inference" / "csrc")
    elsewhere = kernels.build_directory(name)
    assert elsewhere != here and elsewhere.parent == here.parent
