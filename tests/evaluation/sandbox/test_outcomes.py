"""Why a check ended as it did: every status and stderr maps to one of OUTCOME_KINDS."""

import pytest

from evaluation.sandbox.outcomes import OUTCOME_KINDS, outcome_kind

TRACEBACK = "Traceback (most recent call last):\n  File \"main.py\", line 9\n"
EXIT_NOTE = "\n[sandbox] the program exited before its tests finished (status 0, no token)"
KINDS = [
    ("passed", "", "x = 1", "passed"),
    ("failed", TRACEBACK + "    assert f(1) == 2\nAssertionError\n", "x", "wrong answer"),
    ("failed", TRACEBACK + "NameError: name 'remove_Occ' is not defined\n", "x", "name error"),
    ("failed", TRACEBACK + "    Sure! here\nSyntaxError: invalid syntax\n", "Sure!", "no code"),
    ("failed", TRACEBACK + "AssertionError\n", "", "no code"),
    ("failed", EXIT_NOTE, "x", "early exit"),
    ("timeout", "\n[sandbox] time limit of 10 s exceeded; killed", "x", "timeout"),
    ("error", "unavailable: library 'tensorflow' is not installed", "", "library unavailable"),
    ("failed", TRACEBACK + "ModuleNotFoundError: No module named 'x'", "x", "library unavailable"),
    ("error", "\n[sandbox] killed by signal 9 SIGKILL", "x", "sandbox limit"),
    ("failed", TRACEBACK + "ZeroDivisionError: division by zero\n", "x", "other exception"),
]


@pytest.mark.parametrize(("status", "stderr", "code", "kind"), KINDS)
def test_every_check_gets_a_kind_so_a_zero_can_be_read(status, stderr, code, kind):
    assert outcome_kind(status, stderr, code) == kind
    assert kind in OUTCOME_KINDS
