"""Adaptive assignment: which condition pair the next judgment should go to.

Two rules, both ranking condition pairs by the precision of their win rate (a judgment
scores 1 / ½ tie / 0 for the pair's first condition; Σ_a is the variance of one judgment of
pair a, n_a its judgments so far):

- ``arena``: Chatbot Arena's active sampling (Chiang et al. 2024, arXiv 2403.04132, § 5):
  draw a pair with probability ∝ how much one more judgment shrinks its standard error,
  ``sqrt(Σ_a / n_a) − sqrt(Σ_a / (n_a + 1))``.
- ``widest`` (the default): give the next judgment to the pair whose CI is widest now,
  ``sqrt(Σ_a / n_a)`` (ties at random). When the target is every comparison's CI within a
  width, only the widest CI stands in the way, so this is where one more judgment shrinks
  the CI that matters most; Arena's rule spreads judgments more evenly (docs/analysis.md
  has both in simulation).

Σ_a is the sample variance of the scores shrunk towards ¼ by `PRIOR_JUDGMENTS`
pseudo-judgments, so a pair whose first few verdicts agreed is not starved. The rules only
rank condition pairs: the assignment rules (overlap, balance, cap, one lease) still decide
which concrete pairs a rater may get, and the rule picks among those.
"""

from collections.abc import Mapping, Sequence

import numpy as np

PRIOR_JUDGMENTS = 2.0
PRIOR_VARIANCE = 0.25  # the largest variance a score in [0, 1] with mean ½ can have
Z_95 = 1.959963984540054
MIN_JUDGMENTS = 10  # below this a pair's sample variance is too rough to stop on


def score_variance(n: np.ndarray, total: np.ndarray, total_squares: np.ndarray) -> np.ndarray:
    """Variance of one judgment's score from the running sums (n, Σ s, Σ s²), shrunk
    towards ¼ by `PRIOR_JUDGMENTS` pseudo-judgments. Arrays of any shape."""
    n = np.asarray(n, float)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(n > 0, np.asarray(total) / n, 0.5)
    squares = np.asarray(total_squares) - n * mean**2
    return (squares + PRIOR_JUDGMENTS * PRIOR_VARIANCE) / (n + PRIOR_JUDGMENTS)


RULES = ("widest", "arena")


def pair_priorities(n: np.ndarray, variance: np.ndarray, rule: str = "widest") -> np.ndarray:
    """Each pair's priority under `rule` (see the module docstring); a pair with no
    judgment counts as one with n = 1 for ``widest`` and gets sqrt(Σ), the most, for
    ``arena``."""
    n = np.asarray(n, float)
    variance = np.asarray(variance, float)
    now = np.sqrt(variance / np.maximum(n, 1))
    if rule == "widest":
        return now
    if rule != "arena":
        raise ValueError(f"rule must be one of {', '.join(RULES)}, not {rule!r}")
    return np.where(n > 0, now - np.sqrt(variance / (n + 1)), now)


def choose(priorities: np.ndarray, rule: str, rng: np.random.Generator) -> np.ndarray:
    """Index of the chosen pair along the last axis: the highest priority (ties at random)
    for ``widest``, a draw ∝ priority for ``arena``."""
    priorities = np.asarray(priorities, float)
    if rule == "widest":
        jitter = rng.random(priorities.shape) * 1e-12
        return (priorities * (1 + jitter)).argmax(axis=-1)
    cumulative = priorities.cumsum(axis=-1)
    draws = rng.random((*priorities.shape[:-1], 1)) * cumulative[..., -1:]
    return np.minimum((cumulative < draws).sum(axis=-1), priorities.shape[-1] - 1)


def next_condition_pair(
    judged: Mapping[tuple[str, str], Sequence[float]],
    available: Sequence[tuple[str, str]],
    rng: np.random.Generator,
    rule: str = "widest",
) -> tuple[str, str]:
    """The condition pair among `available` the next judgment should go to.

    In: every pair's scores so far (1 / ½ / 0 for its first condition; pairs without
    judgments may be missing), the pairs the rater may be given, a seeded generator, the
    rule. Out: one of `available`. Raises ValueError when nothing is available."""
    if not available:
        raise ValueError("no condition pair is available")
    scores = [np.asarray(judged.get(pair, ()), float) for pair in available]
    n = np.array([len(s) for s in scores], float)
    total = np.array([s.sum() for s in scores])
    squares = np.array([(s**2).sum() for s in scores])
    priorities = pair_priorities(n, score_variance(n, total, squares), rule)
    return available[int(choose(priorities, rule, rng))]


def half_width(n: np.ndarray, total: np.ndarray, total_squares: np.ndarray) -> np.ndarray:
    """Half-width of the normal 95 % CI of each pair's win rate (ties ½), from the sample
    variance of the scores (infinite under `MIN_JUDGMENTS` judgments)."""
    n = np.asarray(n, float)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = total / n
        variance = (total_squares - n * mean**2) / (n - 1)
        width = Z_95 * np.sqrt(np.maximum(variance, 0) / n)
    return np.where(n >= MIN_JUDGMENTS, width, np.inf)


def judgments_to_precision(
    pair_probabilities: np.ndarray,
    target_half_width: float,
    *,
    rule: str | None,
    studies: int = 200,
    seed: int = 0,
    max_judgments: int = 100_000,
) -> np.ndarray:
    """Simulate `studies` studies judged one verdict at a time until every pair's 95 % CI
    half-width is at most `target_half_width`; return each study's judgment count.

    In: per condition pair the probabilities [m, 3] of (first wins, tie, second wins);
    `rule` (``widest``, ``arena``) picks each next pair, None gives it to the least-judged
    pair (uniform, balanced assignment, as the lease does without adaptive assignment)."""
    probabilities = np.asarray(pair_probabilities, float)
    m = len(probabilities)
    rng = np.random.default_rng(seed)
    n, total, squares = (np.zeros((studies, m)) for _ in range(3))
    done = np.full(studies, -1)
    cumulative = probabilities.cumsum(axis=1)
    rows = np.arange(studies)
    for step in range(1, max_judgments + 1):
        if rule is None:
            pair = n.argmin(axis=1)
        else:
            pair = choose(pair_priorities(n, score_variance(n, total, squares), rule), rule, rng)
        outcome = (rng.random(studies)[:, None] > cumulative[pair]).sum(axis=1)
        score = np.array([1.0, 0.5, 0.0])[outcome]
        n[rows, pair] += 1
        total[rows, pair] += score
        squares[rows, pair] += score**2
        reached = (half_width(n, total, squares) <= target_half_width).all(axis=1)
        done[(done < 0) & reached] = step
        if (done > 0).all():
            return done
    raise ValueError(f"the target was not reached within {max_judgments} judgments")
