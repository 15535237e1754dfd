"""Input contracts of the statistical core: the two long-format tables it reads.

*Ratings* (for agreement): one row per rating, columns ``unit, rater, value``.
*Judgments* (for preference): one row per pairwise verdict, columns
``item, rater, condition_a, condition_b, winner`` (``winner`` is ``a``, ``b`` or ``tie``)
and optionally ``side_a`` (``left`` / ``right``: where condition_a was shown).

Validation raises `InputError`, which names the column and the row (the DataFrame index
label; the CLI indexes rows by their CSV line number) so a user can fix the file.
"""

from collections.abc import Hashable, Sequence

import numpy as np
import pandas as pd

RATING_COLUMNS = ("unit", "rater", "value")
JUDGMENT_COLUMNS = ("item", "rater", "condition_a", "condition_b", "winner")
WINNERS = ("a", "b", "tie")
SIDES = ("left", "right")
LEVELS = ("nominal", "ordinal", "interval", "ratio")


class InputError(ValueError):
    """A problem with the user's table: which column, which row, what is wrong."""

    def __init__(self, reason: str, *, column: str | None = None, row: Hashable | None = None):
        self.reason = reason
        self.column = column
        self.row = row
        where = ", ".join(
            part
            for part in (
                f"row {row}" if row is not None else "",
                f"column '{column}'" if column is not None else "",
            )
            if part
        )
        super().__init__(f"{where}: {reason}" if where else reason)


def require_columns(df: pd.DataFrame, columns: Sequence[str]) -> None:
    """Raise `InputError` naming every column of `columns` that `df` lacks."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        found = ", ".join(map(str, df.columns)) or "none"
        raise InputError(
            f"missing column(s) {', '.join(missing)} (found: {found})", column=missing[0]
        )
    if df.empty:
        raise InputError("the table has no rows")


def _blank_cells(values: pd.Series) -> np.ndarray:
    """Which cells are empty: None, NaN, pd.NA or only whitespace (bool array)."""
    return (values.isna() | values.astype(str).str.strip().eq("")).to_numpy()


def _identifiers(df: pd.DataFrame, column: str) -> pd.Series:
    """`column` as stripped strings; a blank cell is an error."""
    blank = _blank_cells(df[column])
    if blank.any():
        raise InputError("empty value", column=column, row=df.index[blank.argmax()])
    return df[column].astype(str).str.strip()


def _numbers(values: pd.Series, column: str) -> pd.Series:
    """`values` as finite floats; the first non-number is an error naming its row."""
    out = pd.to_numeric(values.map(lambda v: str(v).strip()), errors="coerce").astype(float)
    bad = ~np.isfinite(out.to_numpy())
    if bad.any():
        row = values.index[bad.argmax()]
        raise InputError(f"not a finite number: {values[row]!r}", column=column, row=row)
    return out


def validate_ratings(df: pd.DataFrame, level: str) -> pd.DataFrame:
    """Check a ratings table and return ``unit, rater, value`` with numeric values.

    Rows with an empty ``value`` are dropped (a missing rating). For ``nominal`` any labels
    are allowed: numbers are kept, other labels are coded 0, 1, ... in sorted order. Other
    levels need numbers. A rater may rate a unit only once."""
    if level not in LEVELS:
        raise ValueError(f"level must be one of {', '.join(LEVELS)}, not {level!r}")
    require_columns(df, RATING_COLUMNS)
    kept = df.loc[~_blank_cells(df["value"]), list(RATING_COLUMNS)]
    if kept.empty:
        raise InputError("no non-empty values", column="value")
    out = pd.DataFrame(
        {"unit": _identifiers(kept, "unit"), "rater": _identifiers(kept, "rater")},
        index=kept.index,
    )
    labels = kept["value"].astype(str).str.strip()
    numeric = pd.to_numeric(labels, errors="coerce")
    if level == "nominal" and numeric.isna().any():
        codes = {label: code for code, label in enumerate(sorted(labels.unique()))}
        out["value"] = labels.map(codes).astype(float)
    else:
        out["value"] = _numbers(kept["value"], "value")
    duplicated = out.duplicated(["unit", "rater"])
    if duplicated.any():
        row = out.index[duplicated.to_numpy().argmax()]
        raise InputError(
            f"rater '{out.at[row, 'rater']}' rated unit '{out.at[row, 'unit']}' twice",
            column="rater",
            row=row,
        )
    return out


def validate_judgments(df: pd.DataFrame) -> pd.DataFrame:
    """Check a judgments table and return it cleaned: identifiers as stripped strings,
    ``winner`` lower-cased, ``side_a`` (if present) ``left`` / ``right`` / missing (blank
    means unknown; test it with ``pd.isna``). Columns: the judgment columns, plus
    ``side_a`` when the input has it."""
    require_columns(df, JUDGMENT_COLUMNS)
    out = pd.DataFrame({c: _identifiers(df, c) for c in JUDGMENT_COLUMNS}, index=df.index)
    out["winner"] = out["winner"].str.lower()
    bad = ~out["winner"].isin(WINNERS).to_numpy()
    if bad.any():
        row = out.index[bad.argmax()]
        raise InputError(
            f"winner must be a, b or tie, not {out.at[row, 'winner']!r}", column="winner", row=row
        )
    same = out["condition_a"] == out["condition_b"]
    if same.any():
        row = out.index[same.to_numpy().argmax()]
        raise InputError("condition_b is the same as condition_a", column="condition_b", row=row)
    if "side_a" in df.columns:
        blank = _blank_cells(df["side_a"])
        sides = df["side_a"].astype(str).str.strip().str.lower().mask(blank, None)
        bad = ~blank & ~sides.isin(SIDES).to_numpy()
        if bad.any():
            row = df.index[bad.argmax()]
            raise InputError(
                f"side_a must be left, right or empty, not {sides[row]!r}",
                column="side_a",
                row=row,
            )
        out["side_a"] = sides.astype(object)
    return out


def canonical_judgments(
    judgments: pd.DataFrame, order: Sequence[str] | None = None
) -> pd.DataFrame:
    """Put every judgment in a fixed condition order: ``condition_a`` comes first in `order`
    (default: sorted names), flipping ``winner`` and ``side_a`` where the two were swapped.

    In: a validated judgments table. Out: a copy with the same columns."""
    rank = _order_rank(judgments, order)
    out = judgments.copy()
    swap = (out["condition_a"].map(rank) > out["condition_b"].map(rank)).to_numpy()
    out.loc[swap, ["condition_a", "condition_b"]] = out.loc[
        swap, ["condition_b", "condition_a"]
    ].to_numpy()
    out.loc[swap, "winner"] = out.loc[swap, "winner"].map({"a": "b", "b": "a", "tie": "tie"})
    if "side_a" in out.columns:
        flipped = {"left": "right", "right": "left"}
        out["side_a"] = pd.Series(
            [
                flipped.get(side) if flip else side
                for side, flip in zip(out["side_a"], swap, strict=True)
            ],
            index=out.index,
            dtype=object,
        )
    return out


def _order_rank(judgments: pd.DataFrame, order: Sequence[str] | None) -> dict[str, int]:
    names = set(judgments["condition_a"]) | set(judgments["condition_b"])
    if order is None:
        return {name: i for i, name in enumerate(sorted(names))}
    unknown = sorted(names - set(order))
    if unknown:
        raise InputError(f"condition(s) {', '.join(unknown)} not in the condition order")
    return {name: i for i, name in enumerate(order)}
