"""Do the report's intervals cover? Studies drawn with planted effects, analysed by the
report's own functions, and the share of 95 % intervals that contain the planted truth.

A benchmark, not a test (``python -m analysis simulate --reps N [--json]``). Each rep draws:

- *preference*: items × conditions (the first against each other, ``vs-first``), every pair
  judged by each rater; a verdict is a tie with probability `ties`, else the first condition
  wins with σ(s₁ − s_k + u_item + v_rater + β · Δlength), u, v and Δlength normal. Intervals:
  the win rate (ties ½) with items and raters as clusters (`preference.pair_table`); truth:
  the expected score, by Monte Carlo over a million draws of the same model. The
  Bradley–Terry ratings with their item × rater sandwich intervals (`preference.bt_table`); truth:
  the BT fit of the expected scores (on a vs-first design each pair's log-odds). A
  condition as strong as the first has nothing planted: how often the report's test
  (`p_cluster`, unadjusted) rejects there at 5 % is its false-positive rate.
- *Pass@1*: problems of Beta(2, 1.5) difficulty, dense passes each sample with the problem's
  difficulty, the sparse condition fails a dense pass with probability `flip`. Intervals:
  each condition's Pass@1 (`alignment.pass_at_1_interval`) and the paired difference
  (`paired.pass_at_1_difference`: Newcombe's with one sample a problem); truths 4/7,
  4/7 · (1 − flip) and −4/7 · flip.
- *speed*: per item a dense speed and the sparse one `ratio` times it with log-normal noise.
  Interval: the paired ratio (`paired.paired_change`); truth `ratio`.

An interval that is None (no width) counts as a miss: the report shows none there.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from analysis.alignment import pass_at_1_interval
from analysis.choice_model import to_rating
from analysis.paired import paired_change, pass_at_1_difference
from analysis.preference import bt_table, pair_table

EASY_MEAN = 2 / 3.5  # mean of Beta(2, 1.5)
REJECTED = "win rate test at 5 %, nothing planted"  # a rejection rate, not a coverage


@dataclass(frozen=True)
class Design:
    """One simulated study's shape and planted effects."""

    items: int = 20
    raters: int = 3
    strengths: tuple[float, ...] = (0.0, 0.0, -0.4, -1.0)
    ties: float = 0.2
    item_sd: float = 0.5
    rater_sd: float = 0.3
    length_effect: float = 0.3
    problems: int = 60
    samples: int = 1
    flip: float = 0.15
    ratio: float = 1.2
    speed_noise: float = 0.1


def _first_wins(rng, design: Design, strength_gap: float, shape) -> np.ndarray:
    """Whether the first condition wins each decisive verdict of `shape` (items, raters)."""
    u = rng.normal(0, design.item_sd, size=(shape[0], 1))
    v = rng.normal(0, design.rater_sd, size=(1, shape[1]))
    length = rng.normal(0, 1, size=shape)
    logit = strength_gap + u + v + design.length_effect * length
    return rng.random(shape) < 1 / (1 + np.exp(-logit))


def true_win_rates(design: Design, draws: int = 1_000_000, seed: int = 12345) -> list[float]:
    """The expected score (ties ½) of the first condition against each other one."""
    rng = np.random.default_rng(seed)
    truths = []
    for s in design.strengths[1:]:
        gap = design.strengths[0] - s
        wins = _first_wins(rng, design, gap, (draws // 100, 100)).mean()
        truths.append(design.ties * 0.5 + (1 - design.ties) * float(wins))
    return truths


def true_ratings(win_truths: list[float]) -> np.ndarray:
    """The BT ratings (`to_rating` scale) a vs-first design converges to: the first
    condition's log-strength minus the k-th's is the log-odds of its expected score."""
    log_strengths = np.array([0.0, *(-np.log(w / (1 - w)) for w in win_truths)])
    return to_rating(log_strengths - log_strengths.mean())


def _judgments(rng, design: Design) -> pd.DataFrame:
    rows = []
    names = [f"c{k}" for k in range(len(design.strengths))]
    for k in range(1, len(names)):
        gap = design.strengths[0] - design.strengths[k]
        first = _first_wins(rng, design, gap, (design.items, design.raters))
        tie = rng.random((design.items, design.raters)) < design.ties
        for i in range(design.items):
            for r in range(design.raters):
                winner = "tie" if tie[i, r] else ("a" if first[i, r] else "b")
                rows.append((f"q{i}", f"r{r}", names[0], names[k], winner))
    return pd.DataFrame(rows, columns=["item", "rater", "condition_a", "condition_b", "winner"])


def _covers(interval, truth: float) -> bool:
    return interval is not None and interval[0] <= truth <= interval[1]


def one_rep(rng, design: Design, win_truths: list[float], seed: int) -> dict[str, list[bool]]:
    """Whether each interval of one simulated study covers its truth, by interval name."""
    hits: dict[str, list[bool]] = {}
    judgments = _judgments(rng, design)
    pairs = pair_table(judgments)
    for pair, truth, strength in zip(pairs, win_truths, design.strengths[1:], strict=True):
        hits.setdefault("win rate (ties ½), item × rater clusters", []).append(
            _covers(pair["win_rate_ties_half_ci_cluster"], truth))
        if strength == design.strengths[0]:
            hits.setdefault(REJECTED, []).append(pair["p_cluster"] < 0.05)
    ratings = {row["condition"]: row["rating_ci"] for row in
               bt_table(judgments)["conditions"]}
    for k, truth in enumerate(true_ratings(win_truths)):
        hits.setdefault("Bradley–Terry rating, item × rater sandwich", []).append(
            _covers(ratings[f"c{k}"], float(truth)))
    easy = rng.beta(2, 1.5, size=design.problems)
    shape = (design.problems, design.samples)
    dense = rng.random(shape) < easy[:, None]
    sparse = dense & ~(rng.random(shape) < design.flip)
    items = np.repeat(np.arange(design.problems), design.samples)
    sample = np.tile(np.arange(design.samples), design.problems)
    tables = [pd.DataFrame({"item": items, "sample": sample, "passed": p.ravel()})
              for p in (dense, sparse)]
    for table, truth, name in zip(tables, (EASY_MEAN, EASY_MEAN * (1 - design.flip)),
                                  ("dense", "sparse"), strict=True):
        hits.setdefault(f"Pass@1 ({name})", []).append(
            _covers(pass_at_1_interval(table["item"], table["passed"]), truth))
    difference = pass_at_1_difference(*tables)
    hits["Pass@1 difference, paired (Newcombe)"] = [
        _covers(difference["difference_ci"], -EASY_MEAN * design.flip)]
    base = rng.uniform(8, 12, size=design.items)
    speed = pd.DataFrame({
        "condition": ["dense"] * design.items + ["sparse"] * design.items,
        "item": list(range(design.items)) * 2,
        "tokens_per_s": np.concatenate([
            base * np.exp(rng.normal(0, design.speed_noise, design.items)),
            base * design.ratio * np.exp(rng.normal(0, design.speed_noise, design.items)),
        ]),
    })
    ratio = paired_change(speed, "sparse", "dense", "tokens_per_s")
    hits["tokens/s ratio to dense, paired t"] = [_covers(ratio["ci"], design.ratio)]
    return hits


def coverage(design: Design, reps: int, seed: int = 0) -> dict:
    """`reps` simulated studies of `design`: per interval, the share that covered the
    truth and its binomial standard error; per test, how often it rejected where nothing
    was planted. Out: ``design``, ``reps``, ``intervals``, ``tests``."""
    rng = np.random.default_rng(seed)
    win_truths = true_win_rates(design)
    totals: dict[str, list[bool]] = {}
    for rep in range(reps):
        for name, hits in one_rep(rng, design, win_truths, seed + rep).items():
            totals.setdefault(name, []).extend(hits)
    return {
        "design": asdict(design),
        "reps": reps,
        "intervals": [
            {"interval": name, "n": len(hits), "coverage": float(np.mean(hits)),
             "se": _se(hits)}
            for name, hits in totals.items() if name != REJECTED
        ],
        "tests": [
            {"test": name, "n": len(hits), "rejection_rate": float(np.mean(hits)),
             "se": _se(hits)}
            for name, hits in totals.items() if name == REJECTED
        ],
    }


def _se(hits: list[bool]) -> float:
    share = float(np.mean(hits))
    return float(np.sqrt(share * (1 - share) / len(hits)))
