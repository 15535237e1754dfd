"""Do raters disagree about sparsity? Each rater's direction of preference, a test of
whether the raters share one, and the same question for subgroups of raters: by the
profile answers a study collects, and by clusters of raters' direction vectors
(plain tables, no Django; see `analysis.mixed`).

The unit of the subgroup tests is the rater: a rater's judgments are not independent of
each other, so the p-values come from permuting group labels across raters, never across
judgments.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import pdist, squareform
from scipy.special import expit
from scipy.stats import chi2_contingency

from analysis.mixed import sparsity_table
from analysis.preference import wilson_interval

MIN_PER_RATER = 5
# A subgroup of one rater is that rater's data: not shown (it would tie their answers to
# their verdicts) and not tested.
MIN_GROUP_RATERS = 2
MIN_CLUSTER_RATERS = 3
CLUSTER_KS = (2, 3, 4)
PERMUTATIONS = 999
# A small ridge keeps a group whose verdicts all went one way finite; the permutation
# p-value stays exact because every permutation is scored the same way.
RIDGE = 1e-3
NEWTON_STEPS = 200
# Cells (rater × condition pair) times permutations scored at once: bounds memory.
BATCH_CELLS = 2_000_000
CLUSTER_CAVEAT = (
    "exploratory: the clusters were formed from these same judgments, so this p-value is "
    "inflated and is not a valid test; use it to describe, not to confirm"
)


def rater_directions(judgments: pd.DataFrame, generations: pd.DataFrame) -> dict:
    """Per rater, how often the sparser output won their decisive judgments between outputs
    of different sparsity (with a Wilson CI), and a chi-square test of homogeneity across
    the raters with at least `MIN_PER_RATER` such judgments (H0: every rater prefers the
    sparser output equally often).

    Out: ``per_rater`` rows (``rater, n, sparser_won, share, share_ci``), ``test``
    (``chi2, dof, p_value, n_raters``) or None, and ``note`` saying why there is no test."""
    data = sparsity_table(judgments, generations)
    per_rater = []
    for rater, group in data.groupby("rater", sort=True):
        won = int(group["sparser_won"].sum())
        per_rater.append(
            {
                "rater": rater,
                "n": len(group),
                "sparser_won": won,
                "share": won / len(group),
                "share_ci": wilson_interval(won, len(group)),
            }
        )
    result: dict = {"per_rater": per_rater, "test": None, "note": None}
    tested = [r for r in per_rater if r["n"] >= MIN_PER_RATER]
    if len(tested) < 2:
        result["note"] = (
            f"needs two raters with at least {MIN_PER_RATER} decisive judgments between "
            f"outputs of different sparsity; {len(tested)} have"
        )
        return result
    table = np.array([[r["sparser_won"], r["n"] - r["sparser_won"]] for r in tested])
    if (table.sum(axis=0) == 0).any():
        result["note"] = "every tested judgment went the same way: nothing to compare"
        return result
    chi2, p_value, dof, _ = chi2_contingency(table, correction=False)
    result["test"] = {
        "chi2": float(chi2),
        "dof": int(dof),
        "p_value": float(p_value),
        "n_raters": len(tested),
    }
    return result


def direction_table(judgments: pd.DataFrame, generations: pd.DataFrame) -> pd.DataFrame:
    """One row per judgment between outputs of different achieved sparsity (ties included):
    ``rater, judgment`` (the judgment column if given, else None), ``pair`` (``"denser vs
    sparser"`` by the conditions' mean sparsity), ``gap`` (sparser minus denser output,
    1 − active_fraction), ``a_sparser`` and ``sparser_won`` (1 / 0, NaN for a tie).

    Its decisive rows are `analysis.mixed.sparsity_table`'s rows."""
    columns = ["rater", "judgment", "pair", "gap", "a_sparser", "sparser_won"]
    needed = {"generation_a", "generation_b", "winner", "condition_a", "condition_b"}
    if judgments.empty or not needed <= set(judgments.columns) or generations.empty:
        return pd.DataFrame(columns=columns)
    sparsity = 1 - generations.set_index("generation")["active_fraction"].astype(float)
    s_a = judgments["generation_a"].map(sparsity).to_numpy(dtype=float)
    s_b = judgments["generation_b"].map(sparsity).to_numpy(dtype=float)
    keep = np.isfinite(s_a) & np.isfinite(s_b) & (np.abs(s_a - s_b) > 1e-9)
    a_sparser = s_a > s_b
    winner = judgments["winner"].to_numpy()
    won = np.where(winner == "tie", np.nan, ((winner == "a") == a_sparser).astype(float))
    condition_sparsity = (
        1 - generations.groupby("condition")["active_fraction"].mean().astype(float)
    ).to_dict()
    pairs = [
        " vs ".join(sorted((a, b), key=lambda c: (condition_sparsity.get(c, 0.0), c)))
        for a, b in zip(judgments["condition_a"], judgments["condition_b"], strict=True)
    ]
    ids = judgments["judgment"] if "judgment" in judgments else pd.Series([None] * len(judgments))
    return pd.DataFrame(
        {
            "rater": judgments["rater"].astype(str).to_numpy()[keep],
            "judgment": ids.to_numpy()[keep],
            "pair": np.asarray(pairs, dtype=object)[keep],
            "gap": np.abs(s_a - s_b)[keep],
            "a_sparser": a_sparser[keep],
            "sparser_won": won[keep],
        },
        columns=columns,
    )


def direction_vectors(
    table: pd.DataFrame,
    criterion_ratings: pd.DataFrame | None = None,
    *,
    min_judgments: int = MIN_PER_RATER,
) -> pd.DataFrame:
    """Each rater's preference direction across condition pairs and criteria: one row per
    rater with at least `min_judgments` decisive verdicts in `table` (`direction_table`),
    one column per feature, each in [-1, 1], positive = for the sparser output:

    - ``choice: <pair>``: 2 · (share of the pair's decisive verdicts won by the sparser
      output) − 1;
    - ``criterion: <name>``: the mean of (sparser − denser output's Likert value) over the
      rater's judgments of different sparsity, divided by the criterion's observed range.

    Features seen by fewer than two raters are dropped; a rater's missing feature is NaN."""
    decisive = table.dropna(subset=["sparser_won"])
    counts = decisive.groupby("rater").size()
    raters = sorted(counts[counts >= min_judgments].index)
    if not raters:
        return pd.DataFrame(index=pd.Index([], name="rater"))
    choice = (
        decisive[decisive["rater"].isin(raters)]
        .groupby(["rater", "pair"])["sparser_won"]
        .mean()
        .unstack("pair")
        .mul(2)
        .sub(1)
    )
    choice.columns = [f"choice: {pair}" for pair in choice.columns]
    frames = [choice]
    if criterion_ratings is not None and not criterion_ratings.empty:
        frames.append(_criterion_directions(table[table["rater"].isin(raters)], criterion_ratings))
    vectors = pd.concat(frames, axis=1).reindex(raters)
    vectors.index.name = "rater"
    return vectors.loc[:, vectors.notna().sum() >= 2]


def _criterion_directions(table: pd.DataFrame, ratings: pd.DataFrame) -> pd.DataFrame:
    merged = table.dropna(subset=["judgment"]).merge(ratings, on="judgment")
    if merged.empty:
        return pd.DataFrame()
    value_a = merged["value_a"].astype(float)
    value_b = merged["value_b"].astype(float)
    difference = np.where(merged["a_sparser"], value_a - value_b, value_b - value_a)
    values = ratings[["value_a", "value_b"]].astype(float)
    by_criterion = ratings["criterion"]
    high = values.max(axis=1).groupby(by_criterion).max()
    scale = (high - values.min(axis=1).groupby(by_criterion).min()).clip(lower=1)
    merged["direction"] = difference / merged["criterion"].map(scale).to_numpy()
    frame = merged.groupby(["rater", "criterion"])["direction"].mean().unstack("criterion")
    frame.columns = [f"criterion: {name}" for name in frame.columns]
    return frame


def rater_clusters(
    vectors: pd.DataFrame,
    *,
    ks: Sequence[int] = CLUSTER_KS,
    min_size: int = MIN_CLUSTER_RATERS,
) -> dict:
    """Agglomerative (Ward) clusters of the raters' direction vectors (`direction_vectors`;
    a missing feature is filled with that feature's mean over raters). k is the one of `ks`
    with the highest mean silhouette among those whose every cluster has `min_size`
    raters or more.

    Out: ``k``, ``silhouette``, ``silhouettes`` (per k tried, None where a cluster was too
    small), ``labels`` (rater → ``"cluster 1"`` …, largest first), ``clusters`` (``name,
    n_raters, centroid`` with each feature's mean over its members), ``note``."""
    result: dict = {
        "k": None,
        "silhouette": None,
        "silhouettes": {},
        "labels": {},
        "clusters": [],
        "note": None,
    }
    if len(vectors) < 2 * min_size or vectors.shape[1] == 0:
        result["note"] = (
            f"clustering needs at least {2 * min_size} raters with {MIN_PER_RATER} or more "
            f"decisive judgments between outputs of different sparsity; {len(vectors)} have"
        )
        return result
    points = vectors.fillna(vectors.mean()).to_numpy(dtype=float)
    if np.ptp(points, axis=0).max() < 1e-12:
        result["note"] = "every rater has the same direction vector: nothing to cluster"
        return result
    tree = linkage(points, method="ward")
    distances = squareform(pdist(points))
    best = None
    for k in ks:
        labels = fcluster(tree, t=k, criterion="maxclust")
        sizes = np.bincount(labels)[1:]
        if len(sizes) != k or sizes.min() < min_size:
            result["silhouettes"][str(k)] = None
            continue
        score = silhouette(distances, labels)
        result["silhouettes"][str(k)] = score
        if best is None or score > best[1]:
            best = (k, score, labels)
    if best is None:
        result["note"] = (
            f"no k in {', '.join(map(str, ks))} gives clusters of at least {min_size} raters"
        )
        return result
    k, score, labels = best
    # Name clusters by size (largest first), then by their first rater: stable names.
    order = sorted(set(labels), key=lambda c: (-(labels == c).sum(), np.argmax(labels == c)))
    names = {c: f"cluster {i}" for i, c in enumerate(order, start=1)}
    result.update(
        k=k,
        silhouette=score,
        labels={rater: names[c] for rater, c in zip(vectors.index, labels, strict=True)},
        clusters=[
            {
                "name": names[c],
                "n_raters": int((labels == c).sum()),
                "centroid": {
                    feature: _or_none(value)
                    for feature, value in vectors[labels == c].mean().items()
                },
            }
            for c in order
        ],
    )
    return result


def silhouette(distances: np.ndarray, labels: np.ndarray) -> float:
    """Mean silhouette width (Rousseeuw 1987) of a clustering, from the square matrix of
    pairwise distances; a point alone in its cluster scores 0."""
    clusters = np.unique(labels)
    members = np.array([labels == c for c in clusters])  # [K, n]
    sums = distances @ members.T  # [n, K]: each point's summed distance to each cluster
    sizes = members.sum(axis=1).astype(float)
    own = np.searchsorted(clusters, labels)
    n = len(labels)
    a = sums[np.arange(n), own] / np.maximum(sizes[own] - 1, 1)
    mean_to = sums / sizes
    mean_to[np.arange(n), own] = np.inf
    b = mean_to.min(axis=1)
    width = np.where(sizes[own] > 1, (b - a) / np.maximum(np.maximum(a, b), 1e-300), 0.0)
    return float(width.mean())


def rater_cells(table: pd.DataFrame) -> pd.DataFrame:
    """The decisive rows of `direction_table` summed per rater and condition pair: ``rater,
    pair, n, won`` (sparser output won) and ``gap`` (mean sparsity gap). The subgroup
    curves and tests are fitted on these cells."""
    decisive = table.dropna(subset=["sparser_won"])
    return (
        decisive.groupby(["rater", "pair"], sort=True)
        .agg(n=("sparser_won", "size"), won=("sparser_won", "sum"), gap=("gap", "mean"))
        .reset_index()
    )


def group_summary(cells: pd.DataFrame, groups: Mapping[str, str], order: Sequence[str]) -> list:
    """Per group (in `order`, then any other group sorted): raters, decisive verdicts, the
    share won by the sparser output with a Wilson CI, the same per condition pair (with
    the pair's mean sparsity gap), and the odds ratio of preferring the sparser output per
    +0.1 sparsity gap from a logistic curve. A group with fewer than `MIN_GROUP_RATERS`
    raters shows its rater count only."""
    labelled = cells.assign(group=cells["rater"].map(groups)).dropna(subset=["group"])
    names = list(order) + sorted(set(groups.values()) - set(order))
    gaps = cells.groupby("pair")["gap"].mean()
    rows = []
    for name in names:
        part = labelled[labelled["group"] == name]
        n_raters = int(part["rater"].nunique())
        row: dict = {"group": name, "n_raters": n_raters}
        if n_raters < MIN_GROUP_RATERS:
            row["note"] = f"fewer than {MIN_GROUP_RATERS} raters with data: not shown"
            rows.append(row)
            continue
        row.update(_share(part))
        row["pairs"] = [
            {"pair": pair, "gap": float(gaps[pair]), **_share(by_pair)}
            for pair, by_pair in part.groupby("pair", sort=False)
        ]
        row["pairs"].sort(key=lambda p: p["gap"])
        row["odds_ratio_per_0_1"] = _curve_odds_ratio(part)
        rows.append(row)
    return rows


def _share(cells: pd.DataFrame) -> dict:
    n, won = int(cells["n"].sum()), int(cells["won"].sum())
    return {"n": n, "sparser_won": won, "share": won / n, "share_ci": wilson_interval(won, n)}


def _curve_odds_ratio(cells: pd.DataFrame) -> float | None:
    x = cells["gap"].to_numpy(dtype=float)
    if np.ptp(x) < 1e-9:
        return None
    coef, _ = _fit_groups(
        cells["won"].to_numpy(dtype=float),
        cells["n"].to_numpy(dtype=float),
        x - np.average(x, weights=cells["n"]),
        np.zeros((1, len(cells)), dtype=int),
        1,
    )
    return float(np.exp(0.1 * coef[0, 0, 1]))


def group_difference_test(
    cells: pd.DataFrame,
    groups: Mapping[str, str],
    *,
    permutations: int = PERMUTATIONS,
    seed: int = 0,
) -> tuple[dict | None, str | None]:
    """Do the groups prefer the sparser output differently? Statistic: the likelihood
    ratio of one logistic curve per group, logit P(sparser won) = b0_g + b1_g · gap,
    against one curve for everybody (df = 2 (G − 1); G − 1 when the gap never varies).
    p-value: the share of `permutations` random reassignments of the group labels across
    raters (each rater keeps all of their judgments) whose statistic is at least the
    observed one, (1 + count) / (1 + permutations).

    Only raters with data and groups with `MIN_GROUP_RATERS` raters or more take part.
    Out: (``lr, df, p_value, permutations, n_raters, n_groups, n, assignments, note``,
    None) or (None, note); ``assignments`` is how many distinct ways the raters can be
    split into groups of these sizes, and ``note`` warns when that bounds the p-value."""
    cells = cells[cells["rater"].map(groups).notna()]
    per_group = cells.groupby(cells["rater"].map(groups))["rater"].nunique()
    kept = sorted(per_group[per_group >= MIN_GROUP_RATERS].index)
    if len(kept) < 2:
        return None, (
            f"needs two groups with at least {MIN_GROUP_RATERS} raters who made decisive "
            f"judgments between outputs of different sparsity; {len(kept)} have"
        )
    if permutations < 1:
        return None, "the permutation test is switched off (0 permutations)"
    cells = cells[cells["rater"].map(groups).isin(kept)]
    won, n = cells["won"].to_numpy(dtype=float), cells["n"].to_numpy(dtype=float)
    if won.sum() in (0, n.sum()):
        return None, "every tested judgment went the same way: nothing to compare"
    x = cells["gap"].to_numpy(dtype=float)
    x = x - np.average(x, weights=n)
    raters, rater_of_cell = np.unique(cells["rater"].to_numpy(), return_inverse=True)
    labels = np.array([kept.index(groups[r]) for r in raters])
    rng = np.random.default_rng(seed)
    shuffled = np.vstack([labels] + [rng.permutation(labels) for _ in range(permutations)])
    _, pooled = _fit_groups(won, n, x, np.zeros((1, len(x)), dtype=int), 1)
    batch = max(1, BATCH_CELLS // len(x))
    loglik = np.concatenate(
        [
            _fit_groups(won, n, x, chunk[:, rater_of_cell], len(kept))[1]
            for chunk in np.array_split(shuffled, range(batch, len(shuffled), batch))
        ]
    )
    statistic = 2 * (loglik - pooled[0])
    exceed = int((statistic[1:] >= statistic[0] - 1e-9).sum())
    varies = np.ptp(x) > 1e-9
    sizes = np.bincount(labels)
    assignments = math.factorial(len(labels)) // math.prod(map(math.factorial, sizes))
    return {
        "lr": float(statistic[0]),
        "df": (2 if varies else 1) * (len(kept) - 1),
        "p_value": (1 + exceed) / (1 + permutations),
        "permutations": permutations,
        "n_raters": len(raters),
        "n_groups": len(kept),
        "n": int(n.sum()),
        "assignments": assignments,
        "note": f"only {assignments} distinct ways to split these raters into groups of "
        f"{', '.join(map(str, sizes))}: the p-value cannot fall below about 1/{assignments}"
        if assignments < 100
        else None,
    }, None


def _fit_groups(
    won: np.ndarray, n: np.ndarray, x: np.ndarray, groups: np.ndarray, n_groups: int
) -> tuple[np.ndarray, np.ndarray]:
    """Ridge-penalized binomial logistic curves b0_g + b1_g · x, one per group, for many
    group assignments at once by Newton's method (2 × 2 systems solved in closed form).

    won, n, x: [C] per cell; groups: [B, C] group index of each cell under B assignments.
    Out: coefficients [B, G, 2] and the binomial log-likelihood (without the constant) of
    each assignment [B]."""
    n_sets = len(groups)
    flat = (groups + n_groups * np.arange(n_sets)[:, None]).ravel()

    def per_group(values: np.ndarray) -> np.ndarray:  # [B, C] → [B, G]
        summed = np.bincount(flat, weights=values.ravel(), minlength=n_sets * n_groups)
        return summed.reshape(n_sets, n_groups)

    coef = np.zeros((n_sets, n_groups, 2))
    for _ in range(NEWTON_STEPS):
        b0 = np.take_along_axis(coef[..., 0], groups, axis=1)
        b1 = np.take_along_axis(coef[..., 1], groups, axis=1)
        p = expit(b0 + b1 * x)
        residual, weight = won - n * p, n * p * (1 - p)
        g0 = per_group(residual) - RIDGE * coef[..., 0]
        g1 = per_group(residual * x) - RIDGE * coef[..., 1]
        h00 = per_group(weight) + RIDGE
        h01 = per_group(weight * x)
        h11 = per_group(weight * x * x) + RIDGE
        det = h00 * h11 - h01**2
        step = np.stack([(h11 * g0 - h01 * g1) / det, (h00 * g1 - h01 * g0) / det], axis=-1)
        coef += step
        if np.abs(step).max() < 1e-10:
            break
    b0 = np.take_along_axis(coef[..., 0], groups, axis=1)
    b1 = np.take_along_axis(coef[..., 1], groups, axis=1)
    eta = b0 + b1 * x
    # log p = -log(1 + e^-eta), log(1 - p) = -log(1 + e^eta): stable for large |eta|.
    loglik = -(won * np.logaddexp(0, -eta) + (n - won) * np.logaddexp(0, eta)).sum(axis=1)
    return coef, loglik


def subgroup_analysis(
    judgments: pd.DataFrame,
    generations: pd.DataFrame,
    *,
    profiles: pd.DataFrame | None = None,
    questions: Sequence[dict] = (),
    criterion_ratings: pd.DataFrame | None = None,
    permutations: int = PERMUTATIONS,
    seed: int = 0,
) -> dict:
    """The pluralistic view: do subgroups of raters prefer the sparser output differently?

    In: judgments and generations as `direction_table` reads them; `profiles` ``rater,
    question, answer`` (one row per answered question; "prefer not to say" is no row);
    `questions` ``[{"name", "label", "choices"}]`` (answers are grouped in choice order);
    `criterion_ratings` ``judgment, criterion, value_a, value_b`` for the direction vectors.

    Out: ``profile`` (per question: ``name, label, n_answered, groups`` from
    `group_summary`, ``test`` from `group_difference_test` or None, ``note``),
    ``profile_note``, ``clusters`` (`rater_clusters` plus ``groups``, ``test`` with
    ``exploratory`` and ``caveat``, ``features``, ``vectors``: each rater's direction
    vector and cluster). No raw profile answer leaves this function: only group counts and
    group statistics."""
    table = direction_table(judgments, generations)
    cells = rater_cells(table)
    result: dict = {
        "profile": [],
        "profile_note": None,
        "clusters": None,
        "min_group_raters": MIN_GROUP_RATERS,
        "permutations": permutations,
    }
    answers = profiles if profiles is not None else pd.DataFrame()
    result["profile"], result["profile_note"] = _profile_sections(
        cells, answers, questions, permutations, seed
    )
    vectors = direction_vectors(table, criterion_ratings)
    clusters = rater_clusters(vectors)
    clusters.update(groups=[], test=None, test_note=None)
    if clusters["labels"]:
        order = [c["name"] for c in clusters["clusters"]]
        clusters["groups"] = group_summary(cells, clusters["labels"], order)
        test, note = group_difference_test(
            cells, clusters["labels"], permutations=permutations, seed=seed
        )
        if test is not None:
            test.update(exploratory=True, caveat=CLUSTER_CAVEAT)
        clusters["test"], clusters["test_note"] = test, note
    clusters["features"] = list(vectors.columns)
    clusters["vectors"] = [
        {
            "rater": rater,
            "cluster": clusters["labels"].get(rater),
            "values": [_or_none(v) for v in row],
        }
        for rater, row in zip(vectors.index, vectors.to_numpy(), strict=True)
    ]
    result["clusters"] = clusters
    return result


def _profile_sections(
    cells: pd.DataFrame,
    answers: pd.DataFrame,
    questions: Sequence[dict],
    permutations: int,
    seed: int,
) -> tuple[list[dict], str | None]:
    if not questions:
        return [], "the study asks no profile questions"
    if answers.empty:
        return [], "no rater has answered the profile questions"
    judged = set(cells["rater"])
    sections = []
    for question in questions:
        rows = answers[answers["question"] == question["name"]]
        groups = {
            str(rater): str(answer)
            for rater, answer in zip(rows["rater"], rows["answer"], strict=True)
            if str(rater) in judged
        }
        section: dict = {
            "name": question["name"],
            "label": question.get("label") or question["name"],
            "n_answered": len(groups),
            "groups": group_summary(cells, groups, question.get("choices", [])),
            "test": None,
            "note": None,
        }
        if not groups:
            section["note"] = (
                "no rater with decisive judgments between outputs of different sparsity "
                "answered this question"
            )
        elif len(set(groups.values())) == 1:
            section["note"] = (
                ("the one rater who answered" if len(groups) == 1
                 else f"all {len(groups)} raters who answered")
                + f" chose “{next(iter(groups.values()))}”: nothing to compare"
            )
        else:
            section["test"], section["note"] = group_difference_test(
                cells, groups, permutations=permutations, seed=seed
            )
        sections.append(section)
    return sections, None


def _or_none(value) -> float | None:
    return None if pd.isna(value) else float(value)
