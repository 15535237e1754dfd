"""Inter-rater agreement on a long-format ratings table (``unit, rater, value``).

Krippendorff's alpha is the headline (any number of raters, missing ratings, four levels of
measurement); Fleiss' kappa, mean pairwise Cohen's kappa and pairwise percent agreement are
reported beside it because readers ask for them. The kappas and percent agreement treat
values as nominal categories whatever the level.
"""

from collections.abc import Sequence

import krippendorff
import numpy as np
import pandas as pd
from scipy import sparse
from statsmodels.stats.inter_rater import fleiss_kappa as _statsmodels_fleiss_kappa

from analysis.contracts import canonical_judgments, validate_judgments, validate_ratings

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

    Raises `analysis.contracts.InputError` for a malformed table."""
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
        result["alpha_note"] = _alpha_undefined(matrix, error)
        return result
    replicates = alpha_bootstrap(matrix, level, bootstrap=bootstrap, seed=seed)
    # A resample with no variation or no pairable unit has no alpha (nan): skipped.
    replicates = replicates[~np.isnan(replicates)]
    result["bootstrap_valid"] = len(replicates)
    if len(replicates) >= 2:
        low, high = np.percentile(replicates, [2.5, 97.5])
        result["alpha_ci"] = [float(low), float(high)]
    return result


def _alpha_undefined(matrix: np.ndarray, error: ValueError) -> str:
    """Why alpha is undefined, in the study's words (the `krippendorff` package's messages
    speak of coders and value domains, and reached the study page verbatim)."""
    rated = ~np.isnan(matrix)
    if not (rated.sum(axis=0) >= 2).any():
        return "alpha is undefined: no unit has been rated by two raters yet"
    if len(np.unique(matrix[rated])) <= 1:
        return "alpha is undefined: every rating has the same value, so there is no variation"
    return f"alpha is undefined: {error}"


def unit_coincidences(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Krippendorff's coincidences of each unit of a raters × units matrix.

    Out: the distinct values [V] and float [n_units, V, V]: for a unit with m >= 2 ratings
    and n_c ratings of value c, o_ck = (n_c n_k - [c = k] n_c) / (m - 1); units rated
    fewer than twice contribute zeros. Summed over units this is the coincidence matrix."""
    rated = ~np.isnan(matrix)
    values = np.unique(matrix[rated])
    counts = np.stack([(matrix == v).sum(axis=0) for v in values], axis=1).astype(float)
    m = counts.sum(axis=1)
    outer = counts[:, :, None] * counts[:, None, :]
    outer -= counts[:, :, None] * np.eye(len(values))[None]
    with np.errstate(invalid="ignore", divide="ignore"):
        per_unit = np.where((m >= 2)[:, None, None], outer / (m - 1)[:, None, None], 0.0)
    return values, per_unit


def alpha_from_coincidences(coincidences: np.ndarray, values: np.ndarray, level: str) -> np.ndarray:
    """Krippendorff's alpha from coincidence matrices [..., V, V] (nan where undefined).

    alpha = 1 - (n - 1) sum o_ck d_ck / sum n_c n_k d_ck with the level's squared
    difference d (Krippendorff 2011); the ordinal d uses each matrix's own marginals."""
    o = np.asarray(coincidences, dtype=float)
    n_c = o.sum(axis=-1)
    n = n_c.sum(axis=-1)
    delta = _delta(values, n_c, level)
    observed = (o * delta).sum(axis=(-2, -1))
    expected = (n_c[..., :, None] * n_c[..., None, :] * delta).sum(axis=(-2, -1))
    with np.errstate(invalid="ignore", divide="ignore"):
        alpha = 1 - (n - 1) * observed / expected
    return np.where((expected > 0) & (n > 1), alpha, np.nan)


def _delta(values: np.ndarray, n_c: np.ndarray, level: str) -> np.ndarray:
    c, k = values[:, None], values[None, :]
    if level == "nominal":
        return (c != k).astype(float)
    if level == "interval":
        return (c - k) ** 2
    if level == "ratio":
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.nan_to_num(((c - k) / (c + k)) ** 2)
    # ordinal: (sum_{g=c..k} n_g - (n_c + n_k) / 2)^2 over value ranks
    cumulative = np.cumsum(n_c, axis=-1)
    low = np.minimum.outer(np.arange(len(values)), np.arange(len(values)))
    high = np.maximum.outer(np.arange(len(values)), np.arange(len(values)))
    before_low = np.where(low > 0, np.take(cumulative, low - 1, axis=-1), 0.0)
    between = np.take(cumulative, high, axis=-1) - before_low
    half = (n_c[..., :, None] + n_c[..., None, :]) / 2
    return (between - half) ** 2


def alpha_bootstrap(matrix: np.ndarray, level: str, *, bootstrap: int, seed: int) -> np.ndarray:
    """`bootstrap` replicates of alpha, each resampling units with replacement (seeded).

    Vectorized: a replicate's coincidences are its unit counts times the per-unit
    coincidences. Out: float [bootstrap], nan where a replicate's alpha is undefined."""
    if bootstrap <= 0:
        return np.empty(0)
    values, per_unit = unit_coincidences(matrix)
    flat = per_unit.reshape(len(per_unit), -1)
    rng = np.random.default_rng(seed)
    n_units = matrix.shape[1]
    replicate = np.empty((bootstrap, flat.shape[1]))
    for b in range(bootstrap):
        weights = np.bincount(rng.integers(0, n_units, size=n_units), minlength=n_units)
        replicate[b] = weights @ flat
    size = len(values)
    return alpha_from_coincidences(replicate.reshape(bootstrap, size, size), values, level)


def _fleiss(matrix: np.ndarray) -> dict:
    per_unit = (~np.isnan(matrix)).sum(axis=0)
    if len(set(per_unit)) != 1 or per_unit[0] < 2:
        counts = sorted({int(n) for n in per_unit})
        note = (
            "needs the same number (at least 2) of raters on every unit; "
            f"units here have {', '.join(map(str, counts))} rater{'' if counts == [1] else 's'}"
        )
        return {"fleiss_kappa": None, "fleiss_kappa_note": note}
    categories = np.unique(matrix[~np.isnan(matrix)])
    counts = np.stack([(matrix == c).sum(axis=0) for c in categories], axis=1)
    kappa = fleiss_kappa(counts)
    note = None if kappa is not None else "undefined: every rating is in one category"
    return {"fleiss_kappa": kappa, "fleiss_kappa_note": note}


def pairwise_cohen_kappas(matrix: np.ndarray) -> np.ndarray:
    """Cohen's kappa of every pair of raters over the units both rated, vectorized.

    In: raters × units (nan = missing). Out: float [R, R], nan where a pair shares no unit
    or kappa is 0/0 (both used one and the same category); the diagonal is nan. Sparse
    products, since each rater rates a small share of the units."""
    rated = ~np.isnan(matrix)
    mask = sparse.csr_matrix(rated.astype(float))
    shared = (mask @ mask.T).toarray()
    agree = np.zeros_like(shared)
    chance = np.zeros_like(shared)
    for value in np.unique(matrix[rated]):
        is_value = sparse.csr_matrix((matrix == value).astype(float))
        agree += (is_value @ is_value.T).toarray()
        chance += (is_value @ mask.T).toarray() * (mask @ is_value.T).toarray()
    with np.errstate(invalid="ignore", divide="ignore"):
        observed = agree / shared
        chance = chance / shared**2
        kappa = (observed - chance) / (1 - chance)
    kappa[(shared == 0) | (chance >= 1 - 1e-12)] = np.nan
    np.fill_diagonal(kappa, np.nan)
    return kappa


def _pairwise(matrix: np.ndarray) -> dict:
    kappas = pairwise_cohen_kappas(matrix)
    upper = kappas[np.triu_indices(len(matrix), k=1)]
    upper = upper[~np.isnan(upper)]
    rated = ~np.isnan(matrix)
    counts = np.stack([(matrix == v).sum(axis=0) for v in np.unique(matrix[rated])], axis=1)
    m = rated.sum(axis=0)
    agreeing_pairs = int((counts * (counts - 1) // 2).sum())
    total_pairs = int((m * (m - 1) // 2).sum())
    return {
        "cohen_kappa_mean": float(np.mean(upper)) if len(upper) else None,
        "cohen_kappa_pairs": len(upper),
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


def choice_agreement(codes: pd.DataFrame) -> dict:
    """Agreement on coded pairwise choices beyond alpha, as Chatbot Arena reports it.

    In: `choice_codes` output (``unit, rater, value`` with 0 / 1 = tie / 2). Out:
    ``percent_agreement_with_ties`` (of all pairs of verdicts on the same unit, the share
    that are equal), ``percent_agreement_without_ties`` (the same over pairs where neither
    verdict is a tie) with their pair counts, and ``rater_vs_consensus``: per rater the
    share of their verdicts equal to the majority of the *other* raters of the unit
    (units where the others have no strict majority are skipped), and the mean over raters.
    Values are None where no pair exists."""
    counts = codes.pivot_table(
        index="unit", columns="value", values="rater", aggfunc="count", fill_value=0
    ).reindex(columns=[0, 1, 2], fill_value=0)
    n = counts.to_numpy()
    m = n.sum(axis=1)
    all_pairs = int((m * (m - 1) // 2).sum())
    equal_pairs = int((n * (n - 1) // 2).sum())
    decisive = n[:, [0, 2]]
    d = decisive.sum(axis=1)
    decisive_pairs = int((d * (d - 1) // 2).sum())
    decisive_equal = int((decisive * (decisive - 1) // 2).sum())
    return {
        "percent_agreement_with_ties": equal_pairs / all_pairs if all_pairs else None,
        "n_pairs_with_ties": all_pairs,
        "percent_agreement_without_ties": (
            decisive_equal / decisive_pairs if decisive_pairs else None
        ),
        "n_pairs_without_ties": decisive_pairs,
        "rater_vs_consensus": _rater_vs_consensus(codes, counts),
    }


def _rater_vs_consensus(codes: pd.DataFrame, counts: pd.DataFrame) -> dict:
    per_unit = counts.loc[codes["unit"]].to_numpy()
    value = codes["value"].to_numpy().astype(int)
    others = per_unit.copy()
    others[np.arange(len(value)), value] -= 1
    top = others.max(axis=1)
    strict = (others == top[:, None]).sum(axis=1) == 1
    usable = (others.sum(axis=1) >= 1) & strict
    agrees = others.argmax(axis=1) == value
    table = pd.DataFrame({"rater": codes["rater"].to_numpy(), "usable": usable, "agrees": agrees})
    table = table[table["usable"]]
    per_rater = [
        {"rater": rater, "n_units": len(group), "agreement": float(group["agrees"].mean())}
        for rater, group in table.groupby("rater", sort=True)
    ]
    return {
        "mean": float(np.mean([r["agreement"] for r in per_rater])) if per_rater else None,
        "per_rater": per_rater,
        "note": None if per_rater else "no unit where the other raters have a majority",
    }
