"""The code-execution sandbox (docs/sandbox.md), in three parts.

- `outcomes`: how a run ended (`ExecutionResult`) and why (`outcome_kind`, `OUTCOME_KINDS`);
- `containment`: running one untrusted program contained (`run_program`, `containment()`);
- `checks`: each data set's program around a completion (`check_candidate`).
"""
