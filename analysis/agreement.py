"""Inter-rater agreement on a long-format ratings table (``unit, rater, value``).

Krippendorff's alpha is the headline (any number of raters, missing ratings, four levels of
measurement); Fleiss' kappa, mean pairwise Cohen's kappa and pairwise percent agreement are
reported beside it because readers ask for them. The kappas and percent agreement treat
values as nominal categories whatever the level.
"""

from collections.abc import Sequence
from itertools import combinations

import krippendorff
import numpy as np
import pandas as pd
from statsmodels.stats.inter_rater import fleiss_kappa as _statsmodels_fleiss_kappa

from analysis.tables import canonical_judgments, validate_judgments, validate_ratings

CHOICE_CODES = {"a": 0, "tie": 1, "b": 2}


def reliability_matrix(ratings: pd.DataFrame) -> tuple[np.ndarray, list[str], list[str]]:
    """Pivot validated ratings to the raters × units matrix Krippendorff's alpha reads.

    In: ``unit, rater, value`` (numeric value, one per unit and rater). Out: the float
    matrix with ``nan`` where a rater did not rate a unit, the rater names (rows) and the
    unit names (columns), both sorted."""
    wide = ratings.pivot(index="rater", columns="unit", values="value").sort_index(axis=0)
    wide = wide.sort_index(axis=1)
    return wide.to_numpy(dtype=float), list(wide.index), list(wide.columns)


def krippendorff_alpha(matrix: np.ndarray, level: str) -> float:
    """Krippendorff's alpha of a raters × units matrix (``nan`` = missing) at `level`.

    Raises ValueError (from the `krippendorff` package) when alpha is undefined: a single
    value in the data, or no unit rated twice."""
    return float(krippendorff.alpha(reliability_data=matrix, level_of_measurement=level))


def cohen_kappa(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Cohen's (unweighted) kappa of two raters' paired labels.

    In: two equal-length sequences of category codes. Out: kappa, or None when chance
    agreement is 1 (both raters used one and the same category), where kappa is 0/0."""
    x, y = np.asarray(x), np.asarray(y)
    if x.shape != y.shape or x.size == 0:
        raise ValueError("cohen_kappa needs two non-empty sequences of equal length")
    observed = float(np.mean(x == y))
    categories = np.union1d(x, y)
    chance = float(sum(np.mean(x == c) * np.mean(y == c) for c in categories))
    if chance >= 1.0:
        return None
    return (observed - chance) / (1.0 - chance)


def fleiss_kappa(counts: np.ndarray) -> float | None:
    """Fleiss' kappa of a units × categories table of counts (every row sums to the same
    number of raters). Out: kappa, or None when every rating is in one category."""
    counts = np.asarray(counts, dtype=float)
    shares = counts.sum(axis=0) / counts.sum()
    if np.isclose(np.sum(shares**2), 1.0):
        return None
    return float(_statsmodels_fleiss_kappa(counts, method="fleiss"))


def agreement_summary(
    df: pd.DataFrame, level: str, *, bootstrap: int = 1000, seed: int = 0
) -> dict:
    """Agreement statistics of a long-format ratings table.

    In: a DataFrame with columns ``unit, rater, value`` (missing unit × rater combinations
    allowed; blank values are missing), and the level of measurement (``nominal``,
    ``ordinal``, ``interval`` or ``ratio``). `bootstrap` replicates (resampling units,
    seeded with `seed`) give a 95 % percentile CI for alpha; 0 skips it.

    Out: a JSON-ready dict: counts (``n_units``, ``n_raters``, ``n_ratings``,
    ``n_pairable_units``), ``alpha`` with ``alpha_ci`` and ``alpha_note`` (why alpha is
    None, if it is), ``fleiss_kappa`` with ``fleiss_kappa_note``, ``cohen_kappa_mean``
    over ``cohen_kappa_pairs`` rater pairs, and pooled pairwise ``percent_agreement``.

    Raises `analysis.tables.InputError` for a malformed table."""
    ratings = validate_ratings(df, level)
    matrix, raters, units = reliability_matrix(ratings)
    rated = ~np.isnan(matrix)
    summary: dict = {
        "level": level,
        "n_units": len(units),
        "n_raters": len(raters),
        "n_ratings": int(rated.sum()),
        "n_pairable_units": int((rated.sum(axis=0) >= 2).sum()),
    }
    summary.update(_alpha_with_ci(matrix, level, bootstrap=bootstrap, seed=seed))
    summary.update(_fleiss(matrix))
    summary.update(_pairwise(matrix))
    return summary


def _alpha_with_ci(matrix: np.ndarray, level: str, *, bootstrap: int, seed: int) -> dict:
    result: dict = {
        "alpha": None,
        "alpha_note": None,
        "alpha_ci": None,
        "alpha_ci_level": 0.95,
        "bootstrap": bootstrap,
        "bootstrap_valid": 0,
        "seed": seed,
    }
    try:
        result["alpha"] = krippendorff_alpha(matrix, level)
    except ValueError as error:
        result["alpha_note"] = f"alpha is undefined: {error}"
        return result
    rng = np.random.default_rng(seed)
    n_units = matrix.shape[1]
    replicates = []
    for _ in range(bootstrap):
        sample = matrix[:, rng.integers(0, n_units, size=n_units)]
        try:
            replicates.append(krippendorff_alpha(sample, level))
        except ValueError:
            continue  # a resample with no variation or no pairable unit has no alpha
    result["bootstrap_valid"] = len(replicates)
    if len(replicates) >= 2:
        low, high = np.percentile(replicates, [2.5, 97.5])
        result["alpha_ci"] = [float(low), float(high)]
    return result


def _fleiss(matrix: np.ndarray) -> dict:
    per_unit = (~np.isnan(matrix)).sum(axis=0)
    if len(set(per_unit)) != 1 or per_unit[0] < 2:
        counts = sorted({int(n) for n in per_unit})
        note = (
            "needs the same number (at least 2) of raters on every unit; "
            f"units here have {', '.join(map(str, counts))} raters"
        )
        return {"fleiss_kappa": None, "fleiss_kappa_note": note}
    categories = np.unique(matrix[~np.isnan(matrix)])
    counts = np.stack([(matrix == c).sum(axis=0) for c in categories], axis=1)
    kappa = fleiss_kappa(counts)
    note = None if kappa is not None else "undefined: every rating is in one category"
    return {"fleiss_kappa": kappa, "fleiss_kappa_note": note}


def _pairwise(matrix: np.ndarray) -> dict:
    kappas = []
    for i, j in combinations(range(matrix.shape[0]), 2):
        both = ~np.isnan(matrix[i]) & ~np.isnan(matrix[j])
        if both.any():
            kappa = cohen_kappa(matrix[i, both], matrix[j, both])
            if kappa is not None:
                kappas.append(kappa)
    agreeing_pairs = total_pairs = 0
    for column in matrix.T:
        values = column[~np.isnan(column)]
        _, counts = np.unique(values, return_counts=True)
        agreeing_pairs += int(np.sum(counts * (counts - 1) // 2))
        total_pairs += len(values) * (len(values) - 1) // 2
    return {
        "cohen_kappa_mean": float(np.mean(kappas)) if kappas else None,
        "cohen_kappa_pairs": len(kappas),
        "percent_agreement": agreeing_pairs / total_pairs if total_pairs else None,
        "n_rating_pairs": total_pairs,
    }


def choice_code(
    condition_a: str, condition_b: str, winner: str, order: Sequence[str] | None = None
) -> int:
    """Code one pairwise verdict in a fixed condition order, never by screen side.

    In: the two conditions as stored, ``winner`` (``a``, ``b`` or ``tie``, meaning
    condition_a / condition_b / neither) and the fixed order (default: sorted names).
    Out: 0 if the condition that comes first in the order won, 1 for a tie, 2 if the other
    won, so the codes are ordinal and mean the same for every rater."""
    first = min((condition_a, condition_b), key=_order_key(order))
    if winner == "tie":
        return CHOICE_CODES["tie"]
    if winner not in ("a", "b"):
        raise ValueError(f"winner must be a, b or tie, not {winner!r}")
    winning = condition_a if winner == "a" else condition_b
    return CHOICE_CODES["a"] if winning == first else CHOICE_CODES["b"]


def choice_codes(judgments: pd.DataFrame, order: Sequence[str] | None = None) -> pd.DataFrame:
    """Turn a judgments table into a ratings table for `agreement_summary`.

    In: ``item, rater, condition_a, condition_b, winner`` and an optional fixed condition
    order (default: sorted names). Out: ``unit, rater, value`` where a unit is one item
    judged on one condition pair (``"item: first vs second"``) and value is `choice_code`'s
    0 / 1 / 2 (analyse it as ``ordinal`` or ``nominal``)."""
    canonical = canonical_judgments(validate_judgments(judgments), order)
    return pd.DataFrame(
        {
            "unit": canonical["item"]
            + ": "
            + canonical["condition_a"]
            + " vs "
            + canonical["condition_b"],
            "rater": canonical["rater"],
            "value": canonical["winner"].map(CHOICE_CODES),
        },
        index=canonical.index,
    )


def _order_key(order: Sequence[str] | None):
    if order is None:
        return lambda name: name
    position = {name: i for i, name in enumerate(order)}

    def key(name: str) -> int:
        if name not in position:
            raise ValueError(f"condition {name!r} is not in the condition order")
        return position[name]

    return key
