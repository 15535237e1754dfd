"""How a sandboxed run ended: `ExecutionResult`, and why, as one of `OUTCOME_KINDS`.

Plain data, no processes: what the worker stores and what the report and the CLI read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Status = Literal["passed", "failed", "timeout", "error"]


@dataclass(frozen=True)
class ExecutionResult:
    """Outcome of one sandboxed run.

    status: "passed" (the program ran to its end: the supervisor's completion token came back),
    "failed" (a failing assert, an exception, or any exit before the end, even with status 0),
    "timeout" (wall clock or CPU limit) or "error" (killed by a signal, e.g. a memory or file-size
    limit, output cap exceeded, or the sandbox could not start the program).
    """

    status: Status
    returncode: int | None
    stdout: str
    stderr: str
    duration_s: float
    # How the run was contained: "namespaces", or "guard" (see Containment.warning).
    containment: Literal["namespaces", "guard"] | None = None

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    @property
    def kind(self) -> str:
        """Why it ended as it did: one of OUTCOME_KINDS."""
        return outcome_kind(self.status, self.stderr)


# Why a check ended as it did, so that a Pass@1 of 0 can be read (study page, report, CLI).
OUTCOME_KINDS = (
    "passed",
    "wrong answer",  # an assert failed
    "name error",  # e.g. the function the tests call was never defined
    "other exception",
    "no code",  # extraction found nothing that runs: empty, or not Python
    "early exit",  # exited before its tests finished
    "timeout",
    "library unavailable",
    "sandbox limit",  # killed by a signal (memory, file size), output cap, could not start
)
_NO_CODE_ERRORS = ("SyntaxError", "IndentationError", "TabError")


def outcome_kind(status: str, stderr: str, code: str | None = None) -> str:
    """One of OUTCOME_KINDS for a check's status, stderr (its end is enough) and the code run."""
    if status == "passed":
        return "passed"
    if status == "timeout":
        return "timeout"
    error = _last_exception(stderr)
    if stderr.startswith("unavailable:") or error == "ModuleNotFoundError":
        return "library unavailable"
    if status == "error":
        return "sandbox limit"
    if (code is not None and not code.strip()) or error in _NO_CODE_ERRORS:
        return "no code"
    if "exited before its tests finished" in stderr:
        return "early exit"
    if error == "AssertionError":
        return "wrong answer"
    if error in ("NameError", "UnboundLocalError"):
        return "name error"
    return "other exception"


def _last_exception(stderr: str) -> str | None:
    """The exception class of a traceback's last line ("AssertionError", ...), or None."""
    for line in reversed(stderr.splitlines()):
        name = line.split(":", 1)[0].strip()
        if name and name.replace(".", "").isidentifier() and not line.startswith(" "):
            return name.rsplit(".", 1)[-1]
    return None
