"""Paired comparisons with the reference (dense) condition.

Every condition of a study answers the same problems (Pass@1) and is timed on the same items,
so a condition's difference from dense is measured within problems and items, not as two
separate means with two intervals: a paired test is far more powerful, and intervals that
merely fail to overlap are a test at about the 0.5 % level.

- `pass_at_1_difference`: on the problems both answered, the flips both ways (dense right →
  wrong, wrong → right), McNemar's exact test on the discordant pairs (one sample a problem)
  or its clustered form (Durkalski et al. 2003: several samples a problem, the problem the
  cluster), an interval of the difference in Pass@1 (Newcombe's paired interval with one
  sample a problem, a paired bootstrap over problems with several), and the smallest
  difference the data could detect.
- `paired_change`: a telemetry value (tokens/s, bytes read, memory) against dense on the
  same item *and machine*: the geometric mean ratio (or mean difference) over those pairs
  with a Student-t interval and test; machines are listed, never pooled silently.
- `validate_pass_table`: the CLI's plain table (``item, condition, sample, passed``), read
  by `analysis.alignment.pass_at_1_table`.

A degenerate interval (no width: every problem moved alike) is never shown as certainty:
it is None with a note saying why.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import binom, chi2, norm
from scipy.stats import t as student_t

from analysis.bootstrap import item_bootstrap_counts, percentile_ci
from analysis.contracts import InputError, require_columns
from analysis.preference import wilson_interval

ALPHA = 0.05
POWER = 0.8
# The paired Pass@1 interval's bootstrap over problems: fixed, so page and report agree.
DIFFERENCE_BOOTSTRAP = 2000
DIFFERENCE_SEED = 0
PASS_COLUMNS = ("item", "condition", "passed")
TRUE_WORDS = {"1", "true", "yes", "passed", "pass"}
FALSE_WORDS = {"0", "false", "no", "failed", "fail"}


def mcnemar_exact(right_to_wrong: int, wrong_to_right: int) -> float:
    """Two-sided exact McNemar p: the binomial test of the discordant pairs at ½ (1 when there
    is none, as statsmodels' ``mcnemar(exact=True)``)."""
    n = right_to_wrong + wrong_to_right
    if n == 0:
        return 1.0
    return float(min(1.0, 2 * binom.cdf(min(right_to_wrong, wrong_to_right), n, 0.5)))


def clustered_mcnemar(right_to_wrong: np.ndarray, wrong_to_right: np.ndarray) -> float:
    """McNemar's test with problems as clusters (Durkalski et al. 2003): per problem the
    discordant counts b_k (right → wrong) and c_k; X = (Σ b_k − Σ c_k)² / Σ (b_k − c_k)²,
    chi-square with 1 df. Samples of one problem are not taken as independent. 1 when no
    problem has a net flip."""
    net = np.asarray(right_to_wrong, float) - np.asarray(wrong_to_right, float)
    denominator = float((net**2).sum())
    if denominator == 0:
        return 1.0
    return float(chi2.sf(net.sum() ** 2 / denominator, 1))


def detectable_difference(n: int, discordance: float) -> float | None:
    """The smallest paired difference in a proportion that a two-sided `ALPHA` test finds
    with `POWER` on `n` problems (Connor 1987's normal approximation for McNemar's test),
    the discordance being at least the difference itself. `discordance` is the observed
    mean squared per-problem difference (the share of discordant problems with one sample
    a problem). None without problems."""
    if n <= 0:
        return None
    z_alpha = norm.ppf(1 - ALPHA / 2)
    low, high = 0.0, 1.0
    for _ in range(60):  # bisection on the power, which grows with the difference
        delta = (low + high) / 2
        psi = max(discordance, delta)
        spread = max(psi - delta**2, 1e-12)
        power = norm.cdf((delta * np.sqrt(n) - z_alpha * np.sqrt(psi)) / np.sqrt(spread))
        low, high = (low, delta) if power >= POWER else (delta, high)
    return float(min(high, 1.0))


def pass_at_1_difference(reference: pd.DataFrame, other: pd.DataFrame) -> dict:
    """Pass@1 of `other` against `reference` on the problems both answered.

    In: two tables of checked samples, ``item, sample, passed`` (bool). Samples are paired
    by their index within a problem. Out: ``n_problems`` (both answered), ``n_pairs``
    (paired samples), ``right_to_wrong`` / ``wrong_to_right`` (the flips), ``difference``
    (other − reference, mean over those problems of the per-problem share passed) with its
    ``difference_ci`` (`newcombe_paired_interval` with one sample a problem, else a paired
    bootstrap over problems, None with ``difference_ci_note`` when that has no width),
    ``test`` and ``p``, and ``detectable`` (the smallest difference the
    data could detect, `detectable_difference`)."""
    both = reference.merge(other, on=["item", "sample"], suffixes=("_ref", "_other"))
    common = sorted(set(reference["item"]) & set(other["item"]), key=str)
    out = {
        "n_problems": len(common),
        "n_pairs": len(both),
        "right_to_wrong": int((both["passed_ref"] & ~both["passed_other"]).sum()),
        "wrong_to_right": int((~both["passed_ref"] & both["passed_other"]).sum()),
        "difference": None,
        "difference_ci": None,
        "difference_ci_note": None,
        "test": None,
        "p": None,
        "detectable": None,
    }
    if not common:
        out["difference_ci_note"] = "no problem answered by both"
        return out
    rate_ref = reference[reference["item"].isin(common)].groupby("item")["passed"].mean()
    rate_other = other[other["item"].isin(common)].groupby("item")["passed"].mean()
    differences = (rate_other - rate_ref).to_numpy(dtype=float)
    out["difference"] = float(differences.mean())
    several = both.groupby("item").size().max() > 1 if len(both) else False
    if several or len(both) != len(common):
        out["difference_ci"], out["difference_ci_note"] = _bootstrap_mean(differences)
    else:  # one sample a problem: the bootstrap undercovers on few discordant problems
        out["difference_ci"] = newcombe_paired_interval(
            int((both["passed_ref"] & both["passed_other"]).sum()),
            out["right_to_wrong"], out["wrong_to_right"],
            int((~both["passed_ref"] & ~both["passed_other"]).sum()),
        )
    if several:
        per_problem = both.assign(
            b=both["passed_ref"] & ~both["passed_other"],
            c=~both["passed_ref"] & both["passed_other"],
        ).groupby("item")[["b", "c"]].sum()
        out["test"] = "clustered McNemar (Durkalski), problems as clusters"
        out["p"] = clustered_mcnemar(per_problem["b"].to_numpy(), per_problem["c"].to_numpy())
    else:
        out["test"] = "McNemar exact"
        out["p"] = mcnemar_exact(out["right_to_wrong"], out["wrong_to_right"])
    out["detectable"] = detectable_difference(len(common), float((differences**2).mean()))
    return out


def newcombe_paired_interval(both: int, right_to_wrong: int, wrong_to_right: int,
                             neither: int) -> list[float]:
    """Newcombe's (1998, method 10) 95 % interval of the paired difference in proportions
    other − reference, from the 2 × 2 table of problems (both passed, reference only, other
    only, neither): Wilson intervals of the two margins combined with their correlation.
    It keeps width with no discordant problem, where a bootstrap has none."""
    n = both + right_to_wrong + wrong_to_right + neither
    p_ref, p_other = (both + right_to_wrong) / n, (both + wrong_to_right) / n
    low_ref, high_ref = wilson_interval(both + right_to_wrong, n)
    low_other, high_other = wilson_interval(both + wrong_to_right, n)
    margins = ((both + right_to_wrong) * (wrong_to_right + neither)
               * (both + wrong_to_right) * (right_to_wrong + neither))
    # Newcombe's corrected correlation: a positive ad − bc less n/2 (at least 0), a negative
    # one as it is (as biostatUZH's confIntPairedProportion).
    cross = both * neither - right_to_wrong * wrong_to_right
    cross = max(cross - n / 2, 0.0) if cross > 0 else cross
    phi = cross / np.sqrt(margins) if margins else 0.0
    delta = p_other - p_ref
    lower = delta - np.sqrt(max((p_other - low_other) ** 2 - 2 * phi * (p_other - low_other)
                                * (high_ref - p_ref) + (high_ref - p_ref) ** 2, 0.0))
    upper = delta + np.sqrt(max((high_other - p_other) ** 2 - 2 * phi * (high_other - p_other)
                                * (p_ref - low_ref) + (p_ref - low_ref) ** 2, 0.0))
    return [float(max(lower, -1.0)), float(min(upper, 1.0))]


def _bootstrap_mean(values: np.ndarray) -> tuple[list[float] | None, str | None]:
    """Percentile bootstrap interval of the mean over problems; None and a note when every
    problem moved alike (no width: not certainty, just nothing to resample)."""
    if len(values) < 2:
        return None, "one problem: no interval"
    draws = item_bootstrap_counts(len(values), DIFFERENCE_BOOTSTRAP, DIFFERENCE_SEED)
    interval = percentile_ci(draws @ values / len(values))
    if interval is None or interval[0] == interval[1]:
        return None, "every problem moved alike: the bootstrap has no width"
    return interval, None


def checked_samples(generations: pd.DataFrame) -> pd.DataFrame:
    """``condition, item, sample, passed`` of the checked samples of a generations table
    (``passed`` None = not checked is left out); ``sample`` is ``sample_index`` when the
    table has it, else the order within condition and item."""
    if generations.empty or "passed" not in generations:
        return pd.DataFrame(columns=["condition", "item", "sample", "passed"])
    checked = generations[generations["passed"].notna()]
    if "sample_index" in checked:
        sample = checked["sample_index"]
    else:
        sample = checked.groupby(["condition", "item"]).cumcount()
    return pd.DataFrame({
        "condition": checked["condition"].to_numpy(),
        "item": checked["item"].to_numpy(),
        "sample": np.asarray(sample),
        "passed": checked["passed"].astype(bool).to_numpy(),
    })


def paired_change(
    values: pd.DataFrame, condition: str, reference: str, column: str, *, ratio: bool = True
) -> dict | None:
    """`column` of `condition` against `reference` on the same item and machine.

    In: ``condition, item, <column>`` and optionally ``machine`` (a provenance key: rows of
    different machines are never paired; without it every row counts as one machine).
    Per (item, machine) the two conditions' mean values are paired; with `ratio` their
    ratio, summarized as the geometric mean ratio (a Student-t 95 % interval and two-sided t
    test on the log scale, pairs − 1 df), else their difference (the mean difference, its
    t interval and test). Out: ``estimate``, ``ci`` (None, with ``note``, under two pairs
    or when every pair gave the same value: not certainty), ``p``, ``n_pairs``,
    ``machines`` (those with a pair; "" = unknown is left out), ``scale`` ("ratio" or
    "difference") and ``detectable`` (the smallest change, a ratio above 1 or a difference,
    that a two-sided 5 % test finds with 80 % power at the observed spread). None when either
    condition has no value."""
    if values.empty or column not in values:
        return None
    table = values.assign(value=pd.to_numeric(values[column], errors="coerce"))
    table = table[table["value"].notna() & ((table["value"] > 0) if ratio else True)]
    machine = table["machine"].fillna("").astype(str) if "machine" in table else ""
    means = table.assign(machine=machine).groupby(["condition", "item", "machine"])["value"].mean()
    names = set(means.index.get_level_values(0))
    if condition not in names or reference not in names:
        return None
    pairs = pd.concat([means[condition], means[reference]], axis=1, join="inner", keys=["c", "r"])
    out = {
        "scale": "ratio" if ratio else "difference",
        "estimate": None,
        "ci": None,
        "p": None,
        "n_pairs": len(pairs),
        "machines": sorted(set(pairs.index.get_level_values("machine")) - {""}),
        "detectable": None,
        "note": None,
    }
    if pairs.empty:
        out["note"] = "no item ran under both on one machine: not compared"
        return out
    c, r = pairs["c"].to_numpy(float), pairs["r"].to_numpy(float)
    changes = np.log(c / r) if ratio else c - r
    back = np.exp if ratio else (lambda v: v)
    out["estimate"] = float(back(changes.mean()))
    if len(changes) < 2:
        out["note"] = "one paired item: no interval"
        return out
    se = float(changes.std(ddof=1)) / np.sqrt(len(changes))
    if se == 0:
        out["note"] = "every paired item gave the same change: no spread to test it against"
        return out
    df = len(changes) - 1
    half = float(student_t.ppf(1 - ALPHA / 2, df)) * se
    out["ci"] = [float(back(changes.mean() - half)), float(back(changes.mean() + half))]
    out["p"] = float(2 * student_t.sf(abs(changes.mean()) / se, df))
    out["detectable"] = float(back((student_t.ppf(1 - ALPHA / 2, df) + norm.ppf(POWER)) * se))
    return out


def _passed(values: pd.Series) -> pd.Series:
    """A ``passed`` column of words or numbers as bool; anything else is an `InputError`
    naming its row."""
    words = values.astype(str).str.strip().str.lower()
    bad = ~words.isin(TRUE_WORDS | FALSE_WORDS)
    if bad.any():
        row = values.index[bad.to_numpy().argmax()]
        raise InputError(
            f"passed must be true/false (or 1/0), not {values[row]!r}", column="passed", row=row
        )
    return words.isin(TRUE_WORDS)


def validate_pass_table(df: pd.DataFrame) -> pd.DataFrame:
    """``item, condition, sample, passed`` (``sample`` optional; blank ``passed`` = not
    checked, dropped) as stripped strings, an int sample and a bool ``passed``. A problem's
    sample may appear once per condition."""
    require_columns(df, PASS_COLUMNS)
    checked = df[df["passed"].astype(str).str.strip() != ""]
    if checked.empty:
        raise InputError("no checked sample (every passed cell is empty)", column="passed")
    out = pd.DataFrame(
        {c: checked[c].astype(str).str.strip() for c in ("item", "condition")},
        index=checked.index,
    )
    for column in ("item", "condition"):
        blank = out[column] == ""
        if blank.any():
            raise InputError("empty value", column=column, row=out.index[blank.to_numpy().argmax()])
    if "sample" in checked:
        sample = pd.to_numeric(checked["sample"].astype(str).str.strip(), errors="coerce")
        bad = sample.isna() | (sample % 1 != 0)
        if bad.any():
            row = checked.index[bad.to_numpy().argmax()]
            raise InputError(f"sample must be a whole number, not {checked.at[row, 'sample']!r}",
                             column="sample", row=row)
        out["sample"] = sample.astype(int)
    else:
        out["sample"] = out.groupby(["condition", "item"]).cumcount()
    out["passed"] = _passed(checked["passed"])
    repeated = out.duplicated(["condition", "item", "sample"])
    if repeated.any():
        row = out.index[repeated.to_numpy().argmax()]
        raise InputError(
            f"sample {out.at[row, 'sample']} of item {out.at[row, 'item']!r} appears twice for "
            f"condition {out.at[row, 'condition']!r}", column="sample", row=row,
        )
    return out
