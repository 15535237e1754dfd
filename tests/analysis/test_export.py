import csv
import io

import pytest

from analysis.export import csv_safe, write_csv


@pytest.mark.parametrize(
    "cell",
    ["=1+1", "+1", "-2+3", "@SUM(A1)", "\tTAB", "\rCR", "\0NUL", '=HYPERLINK("http://x")'],
)
def test_formula_starts_are_prefixed(cell):
    assert csv_safe(cell) == "'" + cell


@pytest.mark.parametrize("cell", ["hello", "", " =not first", "1-2", "a=b", "'quoted"])
def test_plain_text_is_unchanged(cell):
    assert csv_safe(cell) == cell


@pytest.mark.parametrize("value", [-1, -0.5, 3, None, True])
def test_non_strings_are_unchanged(value):
    assert csv_safe(value) is value


def test_write_csv_neutralises_every_cell_and_round_trips():
    fp = io.StringIO(newline="")
    rows = [
        {"prompt": "=cmd|' /C calc'!A0", "output": 'fine, "quoted"\nnext line', "score": -1},
        {"prompt": "@x", "extra": "ignored"},
    ]
    write_csv(rows, ["prompt", "output", "score", "-header"], fp)
    assert list(csv.reader(io.StringIO(fp.getvalue(), newline=""))) == [
        ["prompt", "output", "score", "'-header"],
        ["'=cmd|' /C calc'!A0", 'fine, "quoted"\nnext line', "-1", ""],
        ["'@x", "", "", ""],
    ]
