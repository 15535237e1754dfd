"""A small DS-1000 file in the current release's shape (`prompt`, `reference_code`,
`code_context`, `metadata`): the numpy and pandas problems of the evaluation fixture and a
matplotlib problem written like the release's plotting problems (the solution draws; the
tests save the figure and read the axes back)."""

from __future__ import annotations

import json
from pathlib import Path

FIXTURE = Path(__file__).resolve().parent.parent / "evaluation" / "fixtures" / "ds1000_sample.jsonl"

_MATPLOTLIB_CONTEXT = r'''import numpy as np
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
from PIL import Image


def skip_plt_cmds(l):
    return all(p not in l for p in ["plt.show()", "plt.clf()", "plt.close()", "savefig"])


def generate_test_case(test_case_id):
    x = np.arange(10)
    y = np.arange(10) ** 2
    plt.plot(x, y, label="squares")
    plt.legend()
    plt.savefig("ans.png", bbox_inches="tight")
    plt.close()
    return None, None


def exec_test(result, ans):
    code_img = np.array(Image.open("output.png"))
    oracle_img = np.array(Image.open("ans.png"))
    if code_img.shape == oracle_img.shape and np.allclose(code_img, oracle_img):
        return 1
    ax = plt.gca()
    lines = ax.get_lines()
    assert len(lines) == 1
    np.testing.assert_array_equal(lines[0].get_ydata(), np.arange(10) ** 2)
    assert ax.get_legend().get_texts()[0].get_text() == "squares"
    return 1


exec_context = r"""
import numpy as np
import matplotlib.pyplot as plt
x = np.arange(10)
y = x ** 2
[insert]
plt.savefig('output.png', bbox_inches ='tight')
result = None
"""


def test_execution(solution: str):
    solution = "\n".join(filter(skip_plt_cmds, solution.split("\n")))
    code = exec_context.replace("[insert]", solution)
    test_input, expected_result = generate_test_case(1)
    test_env = {"test_input": test_input}
    exec(code, test_env)
    assert exec_test(test_env["result"], expected_result)
'''

MATPLOTLIB_PROBLEM = {
    "prompt": (
        "import numpy as np\nimport matplotlib.pyplot as plt\n\nx = np.arange(10)\ny = x ** 2\n\n"
        "# plot y over x with the label \"squares\" and show the legend\n# SOLUTION START\n"
    ),
    "reference_code": 'plt.plot(x, y, label="squares")\nplt.legend()\n',
    "code_context": _MATPLOTLIB_CONTEXT,
    "metadata": {
        "problem_id": 9513,
        "library_problem_id": 0,
        "library": "Matplotlib",
        "test_case_cnt": 1,
        "perturbation_type": "Origin",
        "perturbation_origin_id": 0,
    },
}
# A wrong answer for each problem, by library: runs, but gives another result.
WRONG_SOLUTIONS = {
    "Numpy": "result = a.min(axis=1)\n",
    "Pandas": "df.to_csv('totals.csv', index=False)\n",
    "Matplotlib": 'plt.plot(x, x, label="squares")\nplt.legend()\n',
}


def write_ds1000(path: Path) -> list[dict]:
    """Write numpy, pandas and matplotlib problems to `path` (JSON lines); returns the rows."""
    numpy_row, pandas_row = (json.loads(line) for line in FIXTURE.read_text().splitlines()[:2])
    rows = [numpy_row, pandas_row, MATPLOTLIB_PROBLEM]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return rows
