"""The one model surgery: ``sparsify(model, policy)`` configures a loaded model for a policy.

It swaps each decoder layer's MLP for a ``SparseMLP`` (or, for a predictor policy, a
``PredictorMLP`` carrying its layer's predictor) and sets the thresholds; it is idempotent, and
everything else keeps seeing an ordinary ``transformers`` model.
"""

from __future__ import annotations

from torch import nn

from inference.int8 import Int8Linear, is_int8
from inference.policies import Policy
from inference.predictor import PredictorMLP, Predictors, attach_predictors
from inference.quantized import QuantLinear, is_quantized
from inference.sparse_mlp import SparseMLP, is_split_hot_cold, row_major


def sparsify(model: nn.Module, policy: Policy, fingerprint: str | None = None) -> nn.Module:
    """Swap each decoder layer's MLP for a ``SparseMLP`` configured by ``policy``; return ``model``.

    Idempotent: layers already wrapped are only re-configured with the policy's thresholds. The
    weights are re-laid out in place for the policy's site when it differs from the last one
    (``SparseMLP.set_site``: the ``input`` site swaps every projection for a ``SparseLinear``);
    a dense policy keeps whatever layout an fp32 model has, and puts GGUF blocks back in the
    file's layout (a re-laid copy is requantized: the dense condition reads the file as stored).
    A ``predictor`` policy swaps in ``PredictorMLP`` (once; a hot/cold split model keeps its
    ``HotColdMLP``) and attaches its predictor file, refusing one trained on a model whose
    fingerprint differs from ``fingerprint``; any other policy turns the predictors off again.
    """
    layers = model.model.layers
    predicting = policy.kind == "predictor"
    site = "h" if predicting else policy.site
    if site not in (None, "h") and is_split_hot_cold(model):
        raise ValueError(f"a hot/cold split model runs the h site and predictors, not {site!r}")
    quantized = is_quantized(model)
    if predicting and (quantized or is_int8(model)):
        raise ValueError("predictor policies run on fp32 weights: load with MODEL_DTYPE=float32")
    for layer in layers:
        if not isinstance(layer.mlp, SparseMLP):
            for name in ("gate_proj", "up_proj", "down_proj"):
                linear = getattr(layer.mlp, name, None)
                assert isinstance(linear, nn.Linear | QuantLinear | Int8Linear), (
                    f"{type(layer.mlp).__name__}.{name} is not an nn.Linear"
                )
            layer.mlp = SparseMLP(layer.mlp)
        elif isinstance(layer.mlp, PredictorMLP) and not predicting and site is not None:
            # A magnitude policy after a predictor: back to a SparseMLP, gate and up row-major
            # again (the predictor's [F, 2, D] block is freed), so that it skips as it should.
            layer.mlp = SparseMLP(layer.mlp)
            row_major(layer.mlp.gate_proj)
            row_major(layer.mlp.up_proj)
            model._predictor_path = None
        # A dense policy keeps any fp32 layout (re-laying fp32 is exact), and returns GGUF
        # blocks to the file's (re-laying them requantizes).
        wanted = site if site is not None or quantized else layer.mlp.layout_for
        if wanted != layer.mlp.layout_for:
            layer.mlp.set_site(wanted, layer.self_attn)
    if predicting:
        source = getattr(model, "_predictor_source", None)
        if getattr(model, "_predictor_path", None) != policy.predictor or source is None:
            attach_predictors(model, Predictors.load(policy.predictor), fingerprint)
            model._predictor_path = policy.predictor
    thresholds = policy.layer_thresholds(len(layers))
    if len(thresholds) != len(layers):
        raise ValueError(f"policy gives {len(thresholds)} thresholds for {len(layers)} layers")
    predict_thresholds = policy.predict_thresholds(len(layers)) if predicting else thresholds
    for layer, threshold, predict_threshold in zip(
        layers, thresholds, predict_thresholds, strict=True
    ):
        layer.mlp.set_threshold(threshold)
        if hasattr(layer.mlp, "predict_threshold"):
            layer.mlp.predict_threshold = float(predict_threshold) if predicting else None
    return model
