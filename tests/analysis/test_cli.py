import json
import subprocess
import sys
from pathlib import Path

import pytest

from analysis.__main__ import main

REPO = Path(__file__).resolve().parents[2]

KRIPPENDORFF_2011_CSV = """unit,rater,value
1,A,1
2,A,2
3,A,3
4,A,3
5,A,2
6,A,1
7,A,4
8,A,1
9,A,2
1,B,1
2,B,2
3,B,3
4,B,3
5,B,2
6,B,2
7,B,4
8,B,1
9,B,2
10,B,5
12,B,3
2,C,3
3,C,3
4,C,3
5,C,2
6,C,3
7,C,4
8,C,2
9,C,2
10,C,5
11,C,1
1,D,1
2,D,2
3,D,3
4,D,3
5,D,2
6,D,4
7,D,4
8,D,1
9,D,2
10,D,5
11,D,1
"""

JUDGMENTS_CSV = """item,rater,condition_a,condition_b,winner,side_a
q1,ann,t0,t50,a,left
q1,bob,t50,t0,b,right
q2,ann,t0,t50,tie,right
q2,bob,t0,t50,b,left
q3,ann,t50,t0,b,left
q3,bob,t0,t50,a,
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "input.csv"
    path.write_text(text, encoding="utf-8")
    return path


def run_error(capsys, argv) -> str:
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert len(captured.err.strip().splitlines()) == 1
    assert "Traceback" not in captured.err
    return captured.err


def test_agreement_json_reproduces_krippendorff(tmp_path, capsys):
    path = write(tmp_path, KRIPPENDORFF_2011_CSV)
    assert main(["agreement", str(path), "--level", "nominal", "--json", "--bootstrap", "0"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert round(summary["alpha"], 3) == 0.743
    assert summary["n_ratings"] == 41


def test_agreement_table(tmp_path, capsys):
    path = write(tmp_path, KRIPPENDORFF_2011_CSV)
    assert main(["agreement", str(path), "--level", "interval", "--bootstrap", "50"]) == 0
    out = capsys.readouterr().out
    assert "Agreement (interval): 12 units, 4 raters, 41 ratings" in out
    assert "Krippendorff's alpha         0.849" in out
    assert "Fleiss' kappa" in out


def test_preference_json_and_table(tmp_path, capsys):
    path = write(tmp_path, JUDGMENTS_CSV)
    assert main(["preference", str(path), "--json", "--bootstrap", "20", "--seed", "3"]) == 0
    summary = json.loads(capsys.readouterr().out)
    (pair,) = summary["pairs"]
    assert (pair["wins"], pair["ties"], pair["losses"]) == (4, 1, 1)
    assert summary["seed"] == 3 and summary["bootstrap"] == 20
    assert summary["position_bias"]["overall"]["n_decisive"] == 4
    assert main(["preference", str(path), "--bootstrap", "20"]) == 0
    out = capsys.readouterr().out
    assert "Preference: 6 judgments, 3 items, 2 raters, 2 conditions" in out
    assert "Bradley-Terry" in out and "Position bias" in out


STYLE_CSV = """\
item,rater,condition_a,condition_b,winner,length_a,length_b,code_blocks_a,code_blocks_b
q1,ann,t0,t50,a,100,160,1,0
q1,bob,t50,t0,b,160,100,0,1
q2,ann,t0,t50,tie,90,200,0,0
q2,bob,t0,t50,b,90,200,0,1
q3,ann,t50,t0,a,150,80,1,1
q3,bob,t0,t50,a,80,150,1,1
q4,ann,t0,t50,b,120,130,0,2
q4,bob,t50,t0,a,130,120,2,0
"""


def test_preference_control_adds_style_control_beside_bradley_terry(tmp_path, capsys):
    path = write(tmp_path, STYLE_CSV)
    argv = ["preference", str(path), "--control", "length,code_blocks", "--bootstrap", "30"]
    assert main([*argv, "--json", "--focus", "t0"]) == 0
    summary = json.loads(capsys.readouterr().out)
    style = summary["style_control"]
    assert (
        set(style["coefficients"])
        == set(style["coefficients_ci"])
        == {
            "length",
            "code_blocks",
        }
    )
    for row in style["conditions"]:
        assert set(row) >= {"condition", "rating", "rating_ci"}, row
    assert "t0's" in style["sentence"] and "bradley_terry" in summary
    assert summary["ties_model"]["tie_parameter"] > 0
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "Style-controlled Bradley-Terry (length, code_blocks)" in out
    assert "Davidson (1970) Bradley-Terry with ties: tie parameter nu" in out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--control", "markdown"], "column 'markdown_a': --control markdown needs column(s)"),
        (["--control", "size"], "unknown control(s) size; choose from length, code_blocks"),
        (["--control", "length", "--focus", "t9"], "--focus 't9' is not a condition"),
    ],
)
def test_bad_controls_are_one_line_errors(tmp_path, capsys, extra, message):
    path = write(tmp_path, STYLE_CSV)
    assert message in run_error(capsys, ["preference", str(path), *extra])


def test_missing_column_names_it_on_the_header_line(tmp_path, capsys):
    path = write(tmp_path, "item,rater,condition_a,condition_b\nq1,ann,t0,t50\n")
    err = run_error(capsys, ["preference", str(path)])
    assert "line 1 (header), column 'winner': missing column(s) winner" in err


def test_bad_winner_names_line_and_column(tmp_path, capsys):
    # The blank line 3 still counts: the bad row is on line 4 of the file.
    path = write(
        tmp_path,
        "item,rater,condition_a,condition_b,winner\nq1,ann,t0,t50,a\n\nq2,ann,t0,t50,left\n",
    )
    err = run_error(capsys, ["preference", str(path)])
    assert f"error: {path}, line 4, column 'winner': winner must be a, b or tie" in err


def test_non_numeric_interval_value_names_line_and_column(tmp_path, capsys):
    path = write(tmp_path, "unit,rater,value\nu1,ann,3\nu1,bob,three\n")
    err = run_error(capsys, ["agreement", str(path), "--level", "interval"])
    assert "line 3, column 'value': not a finite number: 'three'" in err


def test_nominal_labels_are_fine(tmp_path, capsys):
    path = write(tmp_path, "unit,rater,value\nu1,ann,good\nu1,bob,bad\nu2,ann,bad\nu2,bob,bad\n")
    assert main(["agreement", str(path), "--level", "nominal", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n_units"] == 2


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "the file is empty or has no header"),
        ("unit,rater,unit\nu,a,1\n", "line 1: column(s) unit appear twice"),
        ("unit,rater,value\nu,a,1,9\n", "line 2: 4 fields but the header has 3"),
        ("unit,rater,value\nu,a,1\nu,a,2\n", "line 3, column 'rater': rater 'a' rated unit 'u'"),
        ("unit,rater,value\nu,,1\n", "line 2, column 'rater': empty value"),
    ],
)
def test_malformed_files_are_one_line_errors(tmp_path, capsys, text, message):
    path = write(tmp_path, text)
    assert message in run_error(capsys, ["agreement", str(path), "--level", "ordinal"])


def test_unreadable_files_are_one_line_errors(tmp_path, capsys):
    err = run_error(capsys, ["agreement", str(tmp_path / "absent.csv"), "--level", "nominal"])
    assert "No such file or directory" in err
    binary = tmp_path / "binary.csv"
    binary.write_bytes(b"unit,rater,value\n\xff\xfe,a,1\n")
    assert "not UTF-8 text" in run_error(capsys, ["agreement", str(binary), "--level", "nominal"])


def test_usage_errors_exit_2(tmp_path):
    path = write(tmp_path, KRIPPENDORFF_2011_CSV)
    for argv in (
        ["agreement", str(path)],  # --level is required: the package default is a trap
        ["agreement", str(path), "--level", "likert"],
        ["preference", str(path), "--bootstrap", "-1"],
    ):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 2


def test_python_dash_m_runs_without_django(tmp_path):
    path = write(tmp_path, "unit,rater,value\nu1,ann,x\nu1,bob,\n")
    # -X importtime lists every module imported on stderr, so one cold start checks both
    # the entry point and that the statistical core never imports Django.
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "analysis", "agreement", str(path)]
        + ["--level", "interval"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    imports = [line for line in result.stderr.splitlines() if line.startswith("import time:")]
    messages = [line for line in result.stderr.splitlines() if line not in imports]
    assert result.returncode == 2
    assert messages == [f"error: {path}, line 2, column 'value': not a finite number: 'x'"]
    modules = [line.split("|")[-1].strip() for line in imports]
    assert "analysis.agreement" in modules
    assert [module for module in modules if module.split(".")[0] == "django"] == []


def test_power_prints_the_plan(capsys):
    assert main(["power", "--conditions", "2", "--win-rate", "0.6", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["judgments_needed"] == 194 and plan["method"] == "normal approximation"
    assert set(plan) >= {"judgments_needed", "items_needed", "raters_needed", "method"}
    argv = ["power", "--conditions", "3", "--win-rate", "0.6", "--raters-per-pair", "3"]
    assert main([*argv, "--item-sd", "0.5", "--simulations", "300"]) == 0
    out = capsys.readouterr().out
    assert "method: simulation (300 studies, seed 0)" in out
    assert "Holm across 3" in out


def test_bad_power_arguments_are_one_line_errors(capsys):
    err = run_error(capsys, ["power", "--conditions", "1", "--win-rate", "0.6"])
    assert "error: --conditions must be 2 or more" in err
    err = run_error(capsys, ["power", "--conditions", "2", "--win-rate", "0.5"])
    assert "nothing to detect" in err
