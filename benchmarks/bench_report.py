"""The full study-report computation on a large synthetic study (CPU, no database).

    .venv/bin/python -m benchmarks.bench_report [--judgments N] [--raters N] [--bootstrap N]

Defaults: 100 000 judgments, 500 raters, 1 000 bootstrap resamples. Synthesizes 8
conditions (dense, 4 static, 3 dynamic thresholds), items judged on 4 random condition
pairs by 5 distinct raters each under Bradley–Terry, and times `build_report` (agreement
with bootstrap CIs overall and per pair, preference with the item-bootstrap
Bradley–Terry, the mixed model, alignment) and `report_figures`.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time

import numpy as np
import pandas as pd

from analysis import report as report_module
from analysis.report import build_report, report_figures

CONDITIONS = [
    ("dense", {"kind": "dense"}, 1.00, 0.0),
    ("static t=0.02", {"kind": "static", "threshold": 0.02}, 0.80, -0.05),
    ("static t=0.05", {"kind": "static", "threshold": 0.05}, 0.60, -0.15),
    ("static t=0.10", {"kind": "static", "threshold": 0.1}, 0.40, -0.5),
    ("static t=0.20", {"kind": "static", "threshold": 0.2}, 0.25, -1.2),
    ("dynamic t=0.02", {"kind": "dynamic", "threshold": 0.02, "entropy_scale": 1}, 0.78, 0.0),
    ("dynamic t=0.05", {"kind": "dynamic", "threshold": 0.05, "entropy_scale": 1}, 0.58, -0.1),
    ("dynamic t=0.10", {"kind": "dynamic", "threshold": 0.1, "entropy_scale": 1}, 0.42, -0.35),
]
PAIRS_PER_ITEM = 4
RATERS_PER_PAIR = 5


def synthesize(n_judgments: int, n_raters: int, seed: int = 0):
    """Judgments, generations and conditions tables of a synthetic study."""
    rng = np.random.default_rng(seed)
    n_items = n_judgments // (PAIRS_PER_ITEM * RATERS_PER_PAIR)
    k = len(CONDITIONS)
    names = [c[0] for c in CONDITIONS]
    strength = np.array([c[3] for c in CONDITIONS])
    active = np.array([c[2] for c in CONDITIONS])
    gen_ids = np.arange(n_items * k).reshape(n_items, k)
    generations = pd.DataFrame(
        {
            "generation": gen_ids.ravel(),
            "item": np.repeat([f"q{i}" for i in range(n_items)], k),
            "condition": names * n_items,
            "active_fraction": np.clip(
                np.tile(active, n_items) + rng.normal(0, 0.02, n_items * k), 0, 1
            ),
            "tokens_per_s": np.tile(10 / (0.4 + 0.6 * active), n_items)
            + rng.normal(0, 0.5, n_items * k),
            "latency_s": np.tile(3 * (0.4 + 0.6 * active), n_items),
            "peak_rss_bytes": np.tile(2**30 * (0.6 + 0.4 * active), n_items),
            "passed": rng.random(n_items * k) < np.tile(0.5 + strength / 4, n_items),
        }
    )
    all_pairs = np.array([(i, j) for i in range(k) for j in range(i + 1, k)])
    chosen = np.argsort(rng.random((n_items, len(all_pairs))), axis=1)[:, :PAIRS_PER_ITEM]
    pair = all_pairs[chosen]
    pair = np.repeat(pair.reshape(-1, 2), RATERS_PER_PAIR, axis=0)
    item = np.repeat(np.arange(n_items), PAIRS_PER_ITEM * RATERS_PER_PAIR)
    raters = np.argsort(rng.random((n_items * PAIRS_PER_ITEM, n_raters)), axis=1)[
        :, :RATERS_PER_PAIR
    ]
    a, b = pair[:, 0], pair[:, 1]
    p_a = 1 / (1 + np.exp(strength[b] - strength[a]))
    draw = rng.random(len(a))
    winner = np.where(draw < 0.1, "tie", np.where(rng.random(len(a)) < p_a, "a", "b"))
    judgments = pd.DataFrame(
        {
            "item": [f"q{i}" for i in item],
            "rater": [f"rater-{r + 1}" for r in raters.ravel()],
            "condition_a": np.array(names)[a],
            "condition_b": np.array(names)[b],
            "winner": winner,
            "side_a": np.where(rng.random(len(a)) < 0.5, "left", "right"),
            "generation_a": gen_ids[item, a],
            "generation_b": gen_ids[item, b],
        }
    )
    conditions = [{"name": c[0], "policy": c[1]} for c in CONDITIONS]
    return judgments, generations, conditions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--judgments", type=int, default=100_000)
    parser.add_argument("--raters", type=int, default=500)
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--profile", action="store_true", help="Print the top functions.")
    args = parser.parse_args()
    judgments, generations, conditions = synthesize(args.judgments, args.raters)
    print(
        f"{len(judgments)} judgments, {judgments['rater'].nunique()} raters, "
        f"{judgments['item'].nunique()} items, {len(conditions)} conditions, "
        f"bootstrap {args.bootstrap}"
    )
    profiler = cProfile.Profile() if args.profile else None
    parts = {}
    start = time.perf_counter()
    if profiler:
        profiler.enable()
    for name in ("agreement_section", "_preference"):
        original = getattr(report_module, name)

        def timed(*a, _original=original, _name=name, **kw):
            t = time.perf_counter()
            result = _original(*a, **kw)
            parts[_name] = time.perf_counter() - t
            return result

        setattr(report_module, name, timed)
    summary = build_report(judgments, generations, conditions, bootstrap=args.bootstrap)
    built = time.perf_counter()
    report_figures(summary)
    done = time.perf_counter()
    if profiler:
        profiler.disable()
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)
    print(f"agreement (overall + per pair, bootstrap CIs): {parts['agreement_section']:.1f} s")
    print(
        f"preference (pairs, BT item bootstrap, Elo, position bias): {parts['_preference']:.1f} s"
    )
    print(f"whole build_report: {built - start:.1f} s; figures: {done - built:.1f} s")
    print(f"total: {done - start:.1f} s")


if __name__ == "__main__":
    main()
