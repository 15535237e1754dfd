import pandas as pd
import pytest

from analysis.contracts import InputError, canonical_judgments, require_columns, validate_judgments


def test_input_error_names_row_and_column():
    error = InputError("bad", column="winner", row=7)
    assert str(error) == "row 7, column 'winner': bad"
    assert (error.reason, error.column, error.row) == ("bad", "winner", 7)
    assert str(InputError("no rows")) == "no rows"


def test_require_columns_lists_every_missing_column_and_refuses_empty_tables():
    with pytest.raises(InputError, match=r"missing column\(s\) rater, value \(found: unit\)"):
        require_columns(pd.DataFrame({"unit": [1]}), ["unit", "rater", "value"])
    with pytest.raises(InputError, match="no rows"):
        require_columns(pd.DataFrame({"unit": []}), ["unit"])


def test_winner_is_case_insensitive_and_identifiers_are_stripped():
    data = pd.DataFrame(
        {
            "item": [" q1 "],
            "rater": ["ann"],
            "condition_a": ["t0"],
            "condition_b": ["t50 "],
            "winner": ["TIE"],
        }
    )
    out = validate_judgments(data)
    assert out.iloc[0].to_dict() == {
        "item": "q1",
        "rater": "ann",
        "condition_a": "t0",
        "condition_b": "t50",
        "winner": "tie",
    }


def test_a_fixed_order_must_name_every_condition():
    data = pd.DataFrame(
        {"item": ["q"], "rater": ["r"], "condition_a": ["x"], "condition_b": ["y"], "winner": ["a"]}
    )
    with pytest.raises(InputError, match="condition\\(s\\) y not in the condition order"):
        canonical_judgments(validate_judgments(data), order=["x"])
