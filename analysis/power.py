"""Sample-size planning: how many items, judgments and raters detect a preference.

The effect is the first condition's (the dense baseline's) win rate P among decisive
verdicts against each other condition; the other conditions are equal among themselves.
Each item gives every pair of the design (``all-pairs``: all K(K−1)/2; ``vs-first``: the
first against each other, K − 1), each pair judged by k raters. A judgment is a tie with
probability T; otherwise the first condition wins with ``σ(logit P + u + v)``, u ~ N(0,
item_sd²) shared by the k raters of one item's pair, v ~ N(0, rater_sd²) a rater's own lean.

*Power* is per comparison: the chance that one comparison with win rate P is significant in
the right direction at Holm-adjusted level α across the design's comparisons, with the
tests the report uses (`analysis.preference`):

- two conditions, independent judgments (no item or rater spread): the report's sign test
  (ties left out); sample size by the normal approximation,
  ``n = (z_{1−α/2} · ½ + z_power · √(P(1−P)))² / (P − ½)²`` decisive judgments, ÷ (1 − T),
  and the exact power of the sign test at that size;
- anything else: the report's item × rater cluster t test of the win rate (`cluster_test`) with
  Holm across the comparisons, power by simulating the design (seeded), items found by
  bisection on the simulated power.
"""

import functools
import math
from dataclasses import dataclass

import numpy as np
from scipy.stats import binom, norm

from analysis.preference import cluster_test

DESIGNS = ("all-pairs", "vs-first")
SIMULATIONS = 1000
MAX_ITEMS = 100_000
EXACT_LIMIT = 3000


@dataclass(frozen=True)
class StudyDesign:
    """What a study plans: K conditions, the effect, ties, overlap and spreads."""

    conditions: int = 2
    # The first condition's share of decisive verdicts against each other one (0.6: 60/40).
    win_rate: float = 0.6
    tie_rate: float = 0.0
    raters_per_pair: int = 1  # the study's overlap
    # Spreads on the log-odds scale: between items (shared by an item's raters), raters.
    item_sd: float = 0.0
    rater_sd: float = 0.0
    design: str = "all-pairs"
    alpha: float = 0.05
    items_per_rater: int | None = None  # the study's per-rater cap (None: no cap)

    def __post_init__(self):
        problems = []
        if self.conditions < 2:
            problems.append("--conditions must be 2 or more")
        if not 0 < self.win_rate < 1:
            problems.append("--win-rate must be between 0 and 1")
        if not 0 <= self.tie_rate < 1:
            problems.append("--tie-rate must be from 0 to below 1")
        if self.raters_per_pair < 1:
            problems.append("--raters-per-pair must be 1 or more")
        if self.item_sd < 0 or self.rater_sd < 0:
            problems.append("--item-sd and --rater-sd must be 0 or more")
        if self.design not in DESIGNS:
            problems.append(f"--design must be one of {', '.join(DESIGNS)}")
        if not 0 < self.alpha < 1:
            problems.append("--alpha must be between 0 and 1")
        if self.items_per_rater is not None and self.items_per_rater < 1:
            problems.append("--items-per-rater must be 1 or more")
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def pairs(self) -> list[tuple[int, int]]:
        """Condition pairs each item gives, the first condition first."""
        k = self.conditions
        if self.design == "vs-first":
            return [(0, j) for j in range(1, k)]
        return [(i, j) for i in range(k) for j in range(i + 1, k)]

    @property
    def simple(self) -> bool:
        """Two conditions and independent judgments: the normal approximation applies."""
        return self.conditions == 2 and self.item_sd == 0 and self.rater_sd == 0

    def raters_needed(self, items: int) -> int:
        """Raters to give every pair its k distinct raters within the per-rater cap."""
        judgments = items * len(self.pairs) * self.raters_per_pair
        if self.items_per_rater is None:
            return self.raters_per_pair
        return max(self.raters_per_pair, math.ceil(judgments / self.items_per_rater))


def sample_size(
    design: StudyDesign,
    power: float = 0.8,
    *,
    simulations: int = SIMULATIONS,
    seed: int = 0,
) -> dict:
    """Items, judgments and raters that reach `power` (see the module docstring).

    Out: ``judgments_needed``, ``items_needed``, ``raters_needed``, ``method``, ``test``,
    ``power`` (what the planned items give: the sign test's exact power in the simple case,
    whose discreteness can leave it a little under the approximation's target; else the
    simulated power), ``comparisons``, ``pairs_per_item``."""
    if not 0 < power < 1:
        raise ValueError("--power must be between 0 and 1")
    if simulations < 1:
        raise ValueError("--simulations must be 1 or more")
    if design.win_rate == 0.5:
        raise ValueError("--win-rate 0.5 is no preference: there is nothing to detect")
    if design.simple:
        decisive = normal_approximation_n(design.win_rate, design.alpha, power)
        per_pair = math.ceil(decisive / (1 - design.tie_rate))
        items = math.ceil(per_pair / design.raters_per_pair)
        achieved = sign_test_power(design, items)
        method = "normal approximation"
    else:
        items, achieved = _bisect_items(design, power, simulations, seed)
        method = f"simulation ({simulations} studies, seed {seed})"
    return {
        "judgments_needed": items * len(design.pairs) * design.raters_per_pair,
        "items_needed": items,
        "raters_needed": design.raters_needed(items),
        "method": method,
        "test": _test_name(design),
        "power": achieved,
        "comparisons": len(design.pairs),
        "pairs_per_item": len(design.pairs),
    }


def normal_approximation_n(win_rate: float, alpha: float, power: float) -> float:
    """Decisive judgments a two-sided test of p = ½ needs to detect `win_rate`."""
    z_alpha, z_power = norm.ppf(1 - alpha / 2), norm.ppf(power)
    spread = math.sqrt(win_rate * (1 - win_rate))
    return ((z_alpha * 0.5 + z_power * spread) / (win_rate - 0.5)) ** 2


def sign_test_power(design: StudyDesign, items: int) -> float:
    """Exact power of the report's two-condition sign test with `items` items: the
    decisive count is binomial (1 − T), the first condition's wins binomial (P), and a
    study detects when p < α and the first condition won more often."""
    n = items * design.raters_per_pair
    if n > EXACT_LIMIT:  # the exact sum is [n, n]; the normal approximation is close there
        return normal_approximation_power(design, n)
    decisive = np.arange(n + 1)
    wins = np.arange(n + 1)
    grid_w, grid_d = np.meshgrid(wins, decisive)
    valid = grid_w <= grid_d
    p_values = sign_test_p(grid_w, np.where(valid, grid_d - grid_w, 0))
    detect = valid & (p_values < design.alpha) & (2 * grid_w > grid_d)
    p_wins = binom.pmf(grid_w, grid_d, max(design.win_rate, 1 - design.win_rate))
    p_decisive = binom.pmf(decisive, n, 1 - design.tie_rate)
    return float((p_decisive * (p_wins * detect).sum(axis=1)).sum())


def normal_approximation_power(design: StudyDesign, n: int) -> float:
    """Power of the two-condition test with n judgments (normal approximation)."""
    decisive = n * (1 - design.tie_rate)
    p, z_alpha = design.win_rate, norm.ppf(1 - design.alpha / 2)
    shift = abs(p - 0.5) * math.sqrt(decisive) - z_alpha * 0.5
    return float(norm.cdf(shift / math.sqrt(p * (1 - p))))


def power_at(
    design: StudyDesign, items: int, *, simulations: int = SIMULATIONS, seed: int = 0
) -> float:
    """Power with `items` items: exact for the sign test in the simple case, else the share
    of simulated studies whose comparisons with the effect came out significant."""
    if design.simple:
        return sign_test_power(design, items)
    return simulated_power(design, items, simulations=simulations, seed=seed)


def simulated_power(
    design: StudyDesign,
    items: int,
    *,
    simulations: int = SIMULATIONS,
    seed: int = 0,
    test: str | None = None,
) -> float:
    """Share of (comparison with the effect, simulated study) where the Holm-adjusted
    p-value is below α and the first condition won. `test`: ``sign`` or ``cluster``
    (default: the one `sample_size` plans with)."""
    test = test or ("sign" if design.simple else "cluster")
    rng = np.random.default_rng(seed)
    effect = np.array([i == 0 for i, _ in design.pairs])
    detected = np.zeros(effect.sum())
    block = max(1, 2_000_000 // (items * len(design.pairs) * design.raters_per_pair))
    for begin in range(0, simulations, block):
        studies = min(block, simulations - begin)
        scores, raters = _simulate_scores(design, items, studies, rng)  # [S, items, pairs, k]
        p = _p_values(scores, raters, test)
        adjusted = holm_adjusted(p)
        first_won = scores.mean(axis=(1, 3)) > 0.5
        hit = (adjusted < design.alpha) & first_won
        detected += hit[:, effect].sum(axis=0)
    return float(detected.mean() / simulations)


@functools.lru_cache(maxsize=256)  # seeded, so a design's line never changes: the page reuses it
def power_statement(design: StudyDesign, items: int, power: float | None = None) -> str:
    """One line for the setup page, e.g. "40 items × overlap 3 detect a 60/40 preference
    with 80 % power", and what reaching `power` (default 0.8) needs when short of it."""
    target = 0.8 if power is None else power
    achieved = power_at(design, items, simulations=400)
    share = round(100 * max(design.win_rate, 1 - design.win_rate))
    line = (
        f"{items} items × overlap {design.raters_per_pair} detect a {share}/{100 - share} "
        f"preference with {power_percent(achieved)} power"
    )
    if design.conditions > 2:
        line += f" per comparison (Holm across {len(design.pairs)})"
    if achieved < target:
        needed = sample_size(design, target, simulations=400)["items_needed"]
        line += f"; {100 * target:.0f} % needs {needed} items"
    return line + "."


def power_percent(power: float) -> str:
    """A power in words: rounded to a whole percent ("2 %"), but "<1 %" below 0.5 % and
    ">99 %" from 99.5 % up, where rounding would claim a certainty ("0 %", "100 %") that
    a simulation of a few hundred studies cannot give."""
    if power < 0.005:
        return "<1 %"
    if power >= 0.995:
        return ">99 %"
    return f"{math.floor(100 * power + 0.5)} %"  # half up: round() would give 0.5 % "0 %"


def holm_adjusted(p: np.ndarray) -> np.ndarray:
    """Holm-adjusted p-values along the last axis (NaN = no test, left out), vectorized
    over studies; equal to `analysis.preference.holm` on each row."""
    p = np.asarray(p, float)
    tested = ~np.isnan(p)
    m = tested.sum(axis=-1, keepdims=True)
    order = np.argsort(np.where(tested, p, np.inf), axis=-1)
    ranked = np.take_along_axis(np.where(tested, p, np.inf), order, axis=-1)
    factor = np.maximum(m - np.arange(p.shape[-1]), 1)  # untested (inf) sort last
    adjusted = np.minimum(1.0, np.maximum.accumulate(ranked * factor, axis=-1))
    out = np.empty_like(p)
    np.put_along_axis(out, order, adjusted, axis=-1)
    return np.where(tested, out, np.nan)


def sign_test_p(wins: np.ndarray, losses: np.ndarray) -> np.ndarray:
    """Two-sided exact sign test, vectorized (NaN with no decisive judgment); equal to
    `analysis.preference.sign_test`."""
    n = wins + losses
    tail = np.minimum(binom.cdf(wins, n, 0.5), binom.sf(wins - 1, n, 0.5))
    return np.where(n > 0, np.minimum(1.0, 2 * tail), np.nan)


def _simulate_scores(design: StudyDesign, items: int, studies: int, rng
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Scores of the first-listed condition of each pair: 1, ½ (tie) or 0, and the rater
    of each verdict (k distinct raters a pair, from `raters_needed`), both [S, items,
    pairs, k]."""
    pairs, k = len(design.pairs), design.raters_per_pair
    shape = (studies, items, pairs, k)
    effect = np.array(
        [
            math.log(design.win_rate / (1 - design.win_rate)) if i == 0 else 0.0
            for i, _ in design.pairs
        ]
    )
    logit = np.broadcast_to(effect[None, None, :, None], shape).copy()
    if design.item_sd:
        logit += rng.normal(0, design.item_sd, (studies, items, pairs, 1))
    n_raters = design.raters_needed(items)
    raters = _draw_raters(rng, shape, n_raters)
    if design.rater_sd:
        lean = rng.normal(0, design.rater_sd, (studies, n_raters))
        logit += np.take_along_axis(lean, raters.reshape(studies, -1), axis=1).reshape(shape)
    won = rng.random(shape) < 1 / (1 + np.exp(-logit))
    tie = rng.random(shape) < design.tie_rate
    return np.where(tie, 0.5, won.astype(float)), raters


def _draw_raters(rng, shape: tuple, n_raters: int) -> np.ndarray:
    """k distinct raters for every item's pair (k = shape[-1]), uniformly among n_raters."""
    k = shape[-1]
    if n_raters == k:
        return np.broadcast_to(np.arange(k), shape)
    draws = rng.integers(0, n_raters, size=shape)
    for j in range(1, k):  # redraw clashes with earlier raters of the same pair
        while True:
            clash = (draws[..., j : j + 1] == draws[..., :j]).any(axis=-1)
            if not clash.any():
                break
            draws[..., j][clash] = rng.integers(0, n_raters, size=int(clash.sum()))
    return draws


def _p_values(scores: np.ndarray, raters: np.ndarray, test: str) -> np.ndarray:
    """Per study and pair: the sign test on all judgments, or the report's item × rater
    cluster test (`cluster_test`; a pair's k raters of one item are distinct, so each
    verdict is a cell of its own)."""
    if test == "sign":
        wins = (scores == 1).sum(axis=(1, 3))
        losses = (scores == 0).sum(axis=(1, 3))
        return sign_test_p(wins, losses)
    studies, _, pairs, _ = scores.shape
    per_item = scores.sum(axis=3).transpose(0, 2, 1)  # [S, pairs, items]
    n_raters = int(raters.max()) + 1
    if n_raters < 2:
        return cluster_test(per_item, np.full(per_item.shape, float(scores.shape[3])))
    # Flat (study, pair, rater) codes, so one bincount sums every study's raters at once.
    study_pair = (np.arange(studies)[:, None, None, None] * pairs
                  + np.arange(pairs)[None, None, :, None])
    codes = (study_pair * n_raters + raters).ravel()
    size = studies * pairs * n_raters
    by_rater = (np.bincount(codes, scores.ravel(), minlength=size).reshape(studies, pairs, -1),
                np.bincount(codes, minlength=size).reshape(studies, pairs, -1).astype(float))
    cells = scores.transpose(0, 2, 1, 3).reshape(studies, pairs, -1)
    return cluster_test(per_item, np.full(per_item.shape, float(scores.shape[3])),
                        raters=by_rater, cells=(cells, np.ones_like(cells)))


def _bisect_items(design, power, simulations, seed) -> tuple[int, float]:
    """Fewest items whose simulated power reaches `power` (same seed at every size)."""
    start = normal_approximation_n(design.win_rate, design.alpha, power)
    low = 1
    high = max(2, math.ceil(start / (1 - design.tie_rate) / design.raters_per_pair))
    cache: dict[int, float] = {}

    def power_of(items: int) -> float:
        if items not in cache:
            cache[items] = simulated_power(design, items, simulations=simulations, seed=seed)
        return cache[items]

    while power_of(high) < power:
        low, high = high, high * 2
        if high > MAX_ITEMS:
            raise ValueError(f"more than {MAX_ITEMS} items would be needed")
    while high - low > 1:
        middle = (low + high) // 2
        if power_of(middle) >= power:
            high = middle
        else:
            low = middle
    return high, power_of(high)


def _test_name(design: StudyDesign) -> str:
    correction = f", Holm across {len(design.pairs)}" if len(design.pairs) > 1 else ""
    if design.simple:
        return f"two-sided exact sign test, ties left out, alpha {design.alpha}{correction}"
    return (
        f"two-sided item × rater cluster t test of the win rate (ties 1/2), alpha {design.alpha}"
        f"{correction}"
    )
