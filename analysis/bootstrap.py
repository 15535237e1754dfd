"""The item-cluster bootstrap the tie and style models' CIs use, and its percentile interval
(the win rate's and Bradley–Terry's intervals are analytic, items and raters as clusters:
`analysis.preference`).

Judgments of one item are not independent (several raters read the same outputs), so a
replicate draws whole items with replacement and weights each judgment by its item's draw
count. The style-controlled model and the tie model read the same
draws (same item count, replicates and seed), so their CIs come from one resampling.
"""

import numpy as np

CI_LEVEL = 0.95


def item_bootstrap_counts(n_items: int, n: int, seed: int) -> np.ndarray:
    """Cluster bootstrap over items: `n` replicates, each drawing `n_items` items with
    replacement (seeded). Out: int [n, n_items], how often each item was drawn; every
    judgment of an item is weighted by its item's count, so raters judging the same item
    are never treated as independent."""
    rng = np.random.default_rng(seed)
    drawn = rng.integers(0, n_items, size=(n, n_items))
    counts = np.zeros((n, n_items), dtype=np.int64)
    np.add.at(counts, (np.arange(n)[:, None], drawn), 1)
    return counts


def per_item(item_codes: np.ndarray, n_items: int, values: np.ndarray) -> np.ndarray:
    """Sum the rows of `values` (one per judgment) within each item: [n_items, ...]."""
    sums = np.zeros((n_items, *values.shape[1:]))
    np.add.at(sums, item_codes, values)
    return sums


def percentile_ci(values: np.ndarray) -> list[float] | None:
    """The 95 % percentile interval of bootstrap replicates (NaN skipped; None under 2)."""
    values = values[~np.isnan(values)]
    if len(values) < 2:
        return None
    tail = 100 * (1 - CI_LEVEL) / 2
    low, high = np.percentile(values, [tail, 100 - tail])
    return [float(low), float(high)]
