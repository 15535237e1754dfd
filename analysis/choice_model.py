"""Maximum likelihood of a log-linear choice model, many data sets at once.

Each *choice* (a judged pair, or one condition pair's tally) has K outcomes; outcome k has
a feature vector, and its probability is ``softmax(features · params)`` over the K outcomes.
Bradley–Terry with covariates (`analysis.style`: outcomes "a wins", "b wins") and
Davidson's tie model (`analysis.ties`: "i wins", "j wins", "tie") are both of this form.

`fit_choice_model` maximises the log-likelihood of observed (possibly fractional) outcome
counts by Newton's method with step halving, for R count tables at once (a bootstrap's
replicates share the features and differ in the counts). The log-likelihood is concave, so
Newton converges; a small ridge keeps estimates finite when one side always won.
"""

import math

import numpy as np

RATING_CENTRE = 1000.0
RATING_SCALE = 400.0  # rating points per factor of 10 in the odds, as Elo
CHUNK_ELEMENTS = 4_000_000  # floats per [replicates, choices, outcomes, params] block
MAX_ITER = 100
TOLERANCE = 1e-9


def to_rating(log_strengths: np.ndarray) -> np.ndarray:
    """Log-strengths (mean 0) on the Bradley–Terry rating scale, 1000 + 400 · θ / ln 10:
    a 400-point gap means 10 : 1 odds."""
    return RATING_CENTRE + RATING_SCALE * np.asarray(log_strengths) / math.log(10)


def fit_choice_model(
    features: np.ndarray,
    counts: np.ndarray,
    *,
    ridge: float,
    centred: int,
    start: np.ndarray | None = None,
) -> np.ndarray:
    """Parameters maximising ``Σ counts · log p − ridge/2 · |params|²`` for every table.

    In: `features` float [P, K, d] (choice, outcome, parameter); `counts` float [R, P, K];
    `ridge` ≥ 0; the first `centred` parameters are condition strengths, pinned to mean 0
    (the likelihood cannot see their common shift); `start` [d] or [R, d]. Out: float
    [R, d]. Raises ValueError if Newton does not converge (it always should)."""
    n_tables = counts.shape[0]
    per_table = max(1, features.size)
    chunk = max(1, CHUNK_ELEMENTS // per_table)
    params = np.zeros((n_tables, features.shape[2]))
    if start is not None:
        params[:] = start
    for begin in range(0, n_tables, chunk):
        block = slice(begin, begin + chunk)
        params[block] = _newton(features, counts[block], params[block], ridge, centred)
    return params


def _objective(flat, counts, total, params, ridge, centred) -> np.ndarray:
    eta = (params @ flat.T).reshape(counts.shape)
    loglik = (counts * eta).sum(axis=(1, 2)) - (total * _logsumexp(eta)).sum(axis=1)
    mean_term = params[:, :centred].sum(axis=1) ** 2 / max(centred, 1)
    return loglik - ridge / 2 * (params**2).sum(axis=1) - mean_term / 2


def _newton(features, counts, params, ridge, centred) -> np.ndarray:
    n_choices, n_outcomes, d = features.shape
    flat = features.reshape(n_choices * n_outcomes, d)  # matrix products run in BLAS
    pin = np.zeros((d, d))
    pin[:centred, :centred] = 1 / max(centred, 1)
    total = counts.sum(axis=2)
    value = _objective(flat, counts, total, params, ridge, centred)
    for _ in range(MAX_ITER):
        eta = (params @ flat.T).reshape(counts.shape)
        prob = np.exp(eta - _logsumexp(eta)[..., None])
        expected = total[..., None] * prob
        gradient = (counts - expected).reshape(len(params), -1) @ flat
        gradient -= ridge * params + params @ pin
        # Information: Σ_p N_p Cov_p(features), the covariance of the chosen outcome's
        # features: Σ_pk N p_k F_k F_kᵀ − Σ_p N μ_p μ_pᵀ with μ_p = Σ_k p_k F_k.
        mean_feature = (
            (prob.reshape(len(params), -1)[..., None] * flat)
            .reshape(len(params), n_choices, n_outcomes, d)
            .sum(axis=2)
        )
        information = (flat.T * expected.reshape(len(params), 1, -1)) @ flat
        information -= (mean_feature * total[..., None]).transpose(0, 2, 1) @ mean_feature
        information += ridge * np.eye(d) + pin
        step = np.linalg.solve(information, gradient[..., None])[..., 0]
        scale = np.ones(len(params))
        for _ in range(40):
            trial = params + scale[:, None] * step
            new_value = _objective(flat, counts, total, trial, ridge, centred)
            worse = new_value < value - 1e-12 * (1 + np.abs(value))
            if not worse.any():
                break
            scale[worse] /= 2
        params, value = trial, new_value
        if np.abs(scale[:, None] * step).max() < TOLERANCE:
            return params
    raise ValueError("Newton's method did not converge")


def _logsumexp(eta: np.ndarray) -> np.ndarray:
    top = eta.max(axis=-1)
    return top + np.log(np.exp(eta - top[..., None]).sum(axis=-1))
