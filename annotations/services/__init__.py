"""Writes that touch several rows, by entity; views, commands and tasks call these.

- `pairs_assignments`: pairing finished outputs, leasing pairs to raters;
- `judgments`: a rater's verdict on an assignment;
- `enrolment`: a rater's place in a study, consent, completion, Prolific and invite links;
- `lifecycle`: a study from draft to launch, pause and close;
- `rater_data`: deleting a rater's personal data on request;
- `judge`: an LLM judge's verdicts on a study's pairs (issue 31);
- `generations`: a study's generations, their leases, outputs and divergence from dense;
- `executions`: the Pass@1 checks of finished generations;
- `calibrations`: the calibration jobs that set a condition's thresholds;
- `problems`: the problem library (importing a data set);
- `servers`: a condition served as an OpenAI-compatible API from the study page;
- `model_registry`: registered models, their validation and the workers serving them.

Each function has its home in one of these; the names are re-exported here so a caller
reads `services.judgment_submit(...)`. Sending work to the worker queue is `tasks`'."""

from annotations.services.calibrations import (
    calibration_finish,
    calibrations_claim,
    calibrations_create,
    calibrations_fail,
    calibrations_progress,
    calibrations_retry,
)
from annotations.services.enrolment import (
    EntryThrottled,
    OutOfPairs,
    enrolment_complete,
    enrolment_consent,
    enrolment_get,
    enrolment_out_of_pairs,
    invite_create,
    invite_redeem,
    prolific_rater_get,
)
from annotations.services.executions import (
    execution_claim,
    execution_fail,
    execution_jobs_create,
    execution_record,
)
from annotations.services.generations import (
    divergence_record,
    generation_claim,
    generation_complete,
    generation_fail,
    generation_order,
    generation_release,
    generations_cancel,
    generations_create,
    generations_resume,
)
from annotations.services.judge import (
    judge_verdict_claim,
    judge_verdict_fail,
    judge_verdict_record,
    judge_verdict_shown,
    judge_verdicts_create,
)
from annotations.services.judgments import (
    JudgmentRejected,
    Refusal,
    judging_refusal,
    judgment_submit,
)
from annotations.services.lifecycle import study_create, study_launch, study_status_set
from annotations.services.model_registry import (
    model_register,
    model_revalidate,
    model_validation_record,
    worker_heartbeat_forget,
    worker_heartbeat_record,
)
from annotations.services.pairs_assignments import (
    GoldPairInUse,
    assignment_next,
    assignment_next_counted,
    gold_pair_set,
    pair_has_room,
    pair_lock,
    pairs_create,
)
from annotations.services.problems import (
    ImportSummary,
    problems_import,
)
from annotations.services.rater_data import RaterDataDeletion, rater_data_delete
from annotations.services.servers import (
    ServerRefused,
    condition_server_start,
    condition_server_stop,
    server_log_tail,
    server_status,
)

__all__ = [
    "EntryThrottled",
    "GoldPairInUse",
    "ImportSummary",
    "JudgmentRejected",
    "OutOfPairs",
    "RaterDataDeletion",
    "Refusal",
    "ServerRefused",
    "assignment_next",
    "condition_server_start",
    "condition_server_stop",
    "assignment_next_counted",
    "calibration_finish",
    "calibrations_claim",
    "calibrations_create",
    "calibrations_fail",
    "calibrations_progress",
    "calibrations_retry",
    "divergence_record",
    "enrolment_complete",
    "enrolment_consent",
    "enrolment_get",
    "enrolment_out_of_pairs",
    "execution_claim",
    "execution_fail",
    "execution_jobs_create",
    "execution_record",
    "generation_claim",
    "generation_complete",
    "generation_fail",
    "generation_order",
    "generation_release",
    "generations_cancel",
    "generations_create",
    "generations_resume",
    "gold_pair_set",
    "invite_create",
    "invite_redeem",
    "judge_verdict_claim",
    "judge_verdict_fail",
    "judge_verdict_record",
    "judge_verdict_shown",
    "judge_verdicts_create",
    "judging_refusal",
    "judgment_submit",
    "model_register",
    "model_revalidate",
    "model_validation_record",
    "pair_has_room",
    "pair_lock",
    "pairs_create",
    "problems_import",
    "prolific_rater_get",
    "rater_data_delete",
    "server_log_tail",
    "server_status",
    "study_create",
    "study_launch",
    "worker_heartbeat_forget",
    "worker_heartbeat_record",
    "study_status_set",
]
