"""Whole-model 8-bit weights for the GPU path, in gpt-fast's two steps (its weight-only int8):

- ``create_int8_state_dict(model)``: offline, the model's state dict with each decoder layer's
  seven projections (q, k, v, o, gate, up, down) as an int8 ``weight`` and fp32 ``scales``
  (symmetric, one scale per output feature: ``triton_kernels.quantize_int8``), the rest as it was
  (embeddings, norms and the LM head stay in the model's dtype, as ``plan.gpu_weight_bytes``
  counts them).
- ``convert_for_runtime(model)``: swap those projections for empty ``Int8Linear`` modules, so
  ``model.load_state_dict(state, assign=True)`` takes the int8 state dict.

``quantize_model_int8(model)`` does both on a loaded model. For a model too large to load in a
float dtype first (a 70B in bf16 is 140 GB), ``write_int8_checkpoint`` is the offline step on a
Hugging Face directory, one tensor at a time, and ``load_int8_checkpoint`` builds the model on
the meta device and takes the int8 tensors as they are read (``loading.load_model(path,
dtype="int8")`` writes it once under the model cache, then reads it).

One token through an ``Int8Linear`` runs the Triton int8 GEMV (``triton_kernels``: on CUDA,
or on CPU tensors under ``TRITON_INTERPRET=1``), reading 1 byte a weight plus its row's scale;
a prompt, and a CPU without the interpreter, multiply by the dequantized matrix
(``dequantized``: the reference).
``sparsify`` then lays the int8 matrices out for a site as it does float ones (exactly: a
transpose keeps each output's scale) and the sites run the int8 Triton kernels.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM

from inference import triton_kernels

PROJECTIONS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
               "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")  # fmt: skip


def triton_runs_on(device: torch.device) -> bool:
    """Whether the Triton kernels run on ``device``'s tensors here: compiled on CUDA, or
    interpreted on the CPU where ``TRITON_INTERPRET=1`` asks for it (the tests)."""
    return device.type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1"


class Int8Linear(nn.Module):
    """``W x`` (no bias) with ``W [out, in]`` held as int8 ``weight`` times fp32 ``scales [out]``.

    ``weight`` is ``[out, in]``, stored row-major or (``transposed``) as a view of a contiguous
    ``[in, out]`` matrix, a row per input, which the sites that skip inputs or neurons read;
    state-dict keys and values are the same in both layouts.
    """

    def __init__(self, weight: torch.Tensor, scales: torch.Tensor) -> None:
        super().__init__()
        out_features, in_features = weight.shape
        if weight.dtype != torch.int8 or scales.shape != (out_features,):
            raise ValueError(
                f"weight {tuple(weight.shape)} {weight.dtype} with scales "
                f"{tuple(scales.shape)}: expected int8 and one scale a row"
            )
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("weight", weight)
        self.register_buffer("scales", scales.float())

    @classmethod
    def empty(cls, in_features: int, out_features: int, device=None) -> Int8Linear:
        """An ``Int8Linear`` of this shape for ``load_state_dict(..., assign=True)`` to fill."""
        return cls(
            torch.empty(out_features, in_features, dtype=torch.int8, device=device),
            torch.empty(out_features, dtype=torch.float32, device=device),
        )

    @property
    def transposed(self) -> bool:
        return not self.weight.is_contiguous()

    @property
    def bytes_per_weight(self) -> float:
        """Stored bytes a weight: its byte and its share of its row's fp32 scale."""
        return 1.0 + 4.0 / self.in_features

    def set_transposed(self, transposed: bool) -> None:
        """Store ``weight`` as ``[in, out]`` rows (``transposed``) or ``[out, in]``, in place;
        exact (the scales belong to outputs, in either layout)."""
        if transposed == self.transposed:
            return
        stored = self.weight.t().contiguous().t() if transposed else self.weight.contiguous()
        self.weight = stored

    @property
    def kernel_weight(self) -> triton_kernels.Int8Weight:
        """The matrix as the Triton kernels read it: ``[out, in]`` scaled per row, or, when
        ``transposed``, ``[in, out]`` scaled per column."""
        values = self.weight.t() if self.transposed else self.weight
        return triton_kernels.Int8Weight(values, self.scales)

    def dequantized(self, dtype: torch.dtype) -> torch.Tensor:
        """``W`` as ``[out, in]`` in ``dtype`` (a temporary: prompts and the references)."""
        return (self.weight.float() * self.scales.unsqueeze(1)).to(dtype)

    def matvec(self, x1: torch.Tensor) -> torch.Tensor:
        """One token, ``x1: [in]`` -> ``[out]`` in ``x1``'s dtype, through the Triton kernels:
        the int8 GEMV on rows, or on a transposed matrix every row taken at threshold 0."""
        if self.transposed:
            return triton_kernels.sparse_rows_matvec(self.kernel_weight, x1, x1, 0.0)
        return triton_kernels.linear(x1, self.kernel_weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [..., in] -> [..., out]
        if x.shape[:-1].numel() == 1 and triton_runs_on(x.device):
            return self.matvec(x.reshape(-1)).view(*x.shape[:-1], self.out_features)
        return F.linear(x, self.dequantized(x.dtype))

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, int8, transposed={self.transposed}"


def _projections(model: nn.Module):
    """(state-dict prefix, module) of each decoder layer's seven projections."""
    for i, layer in enumerate(model.model.layers):
        if hasattr(layer.mlp, "set_threshold"):  # sparsify lays weights out and wraps them
            raise TypeError("quantize a model to int8 before sparsify, not after")
        for name in PROJECTIONS:
            yield f"model.layers.{i}.{name}", layer.get_submodule(name)


def _quantized(prefix: str, linear: nn.Module) -> triton_kernels.Int8Weight:
    if type(linear) is not nn.Linear or linear.bias is not None:
        raise TypeError(f"{prefix} is a {type(linear).__name__}; expected a bias-free "
                        "nn.Linear (load the model in a float dtype)")  # fmt: skip
    return triton_kernels.quantize_int8(linear.weight.detach(), output_axis=0)


def create_int8_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """``model``'s state dict with its projections' weights int8 plus ``<name>.scales`` (one
    fp32 scale per output feature); the model is left as it was. Projections already int8 are
    taken as they are."""
    state = model.state_dict()
    for prefix, linear in _projections(model):
        if isinstance(linear, Int8Linear):
            continue
        quantized = _quantized(prefix, linear)
        state[f"{prefix}.weight"], state[f"{prefix}.scales"] = quantized.values, quantized.scale
    return state


def convert_for_runtime(model: nn.Module) -> nn.Module:
    """Swap each projection of ``model`` for an empty ``Int8Linear`` of its shape (on its
    device), ready for ``load_state_dict(create_int8_state_dict(...), assign=True)``; returns
    ``model``. Projections already ``Int8Linear`` stay."""
    for prefix, linear in _projections(model):  # lazily: one float matrix freed at a time
        if isinstance(linear, Int8Linear):
            continue
        parent_name, name = prefix.rsplit(".", 1)
        empty = Int8Linear.empty(linear.in_features, linear.out_features, linear.weight.device)
        setattr(model.get_submodule(parent_name), name, empty)
    return model


def quantize_model_int8(model: nn.Module) -> nn.Module:
    """``model``'s projections as int8 with per-output scales, in place (both steps, layer by
    layer so a model on a GPU never holds a second copy of more than one projection)."""
    for prefix, linear in _projections(model):  # lazily: one float matrix freed at a time
        if isinstance(linear, Int8Linear):
            continue
        quantized = _quantized(prefix, linear)
        parent_name, name = prefix.rsplit(".", 1)
        setattr(model.get_submodule(parent_name), name,
                Int8Linear(quantized.values, quantized.scale))  # fmt: skip
    return model


_PROJECTION_KEY = re.compile(
    r"model\.layers\.\d+\.(self_attn\.[qkvo]_proj|mlp\.(gate|up|down)_proj)\.weight"
)


def write_int8_checkpoint(source: Path, out: Path, *, dtype: torch.dtype = torch.bfloat16) -> None:
    """The offline step on a Hugging Face directory ``source`` (``config.json``, safetensors
    shards): ``out`` gets each shard with its projections' weights int8 plus ``.scales``
    (quantized from the weights as stored), every other tensor in ``dtype``, and the config.
    Reads one tensor at a time and holds one shard's output: never the whole model."""
    shards = sorted(source.glob("*.safetensors"))
    if not shards or not (source / "config.json").is_file():
        raise FileNotFoundError(f"{source} holds no config.json and safetensors shards")
    out.mkdir(parents=True, exist_ok=True)
    for shard in shards:
        tensors = {}
        with safe_open(shard, framework="pt") as stored:
            for key in stored.keys():  # noqa: SIM118 (a safe_open handle is not a dict)
                tensor = stored.get_tensor(key)
                if _PROJECTION_KEY.fullmatch(key):
                    quantized = triton_kernels.quantize_int8(tensor, output_axis=0)
                    prefix = key.removesuffix(".weight")
                    tensors[key], tensors[f"{prefix}.scales"] = quantized.values, quantized.scale
                else:
                    tensors[key] = tensor.to(dtype)
        save_file(tensors, out / shard.name)
    shutil.copyfile(source / "config.json", out / "config.json")


def load_int8_checkpoint(directory: Path) -> nn.Module:
    """The model ``write_int8_checkpoint`` wrote to ``directory``, in eval mode: built on the
    meta device, its projections swapped for ``Int8Linear`` (``convert_for_runtime``), each
    shard's tensors taken as read (no float copy of the projections is ever made)."""
    config = AutoConfig.from_pretrained(directory)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    convert_for_runtime(model)
    for shard in sorted(directory.glob("*.safetensors")):
        model.load_state_dict(load_file(shard), strict=False, assign=True)
    # Buffers no checkpoint holds (the rotary frequencies) were made on meta: make them again.
    model.model.rotary_emb = type(model.model.rotary_emb)(config=config)
    if getattr(config, "tie_word_embeddings", False):
        model.tie_weights()
    missing = [name for name, t in (*model.named_parameters(), *model.named_buffers())
               if t.device.type == "meta"]  # fmt: skip
    if missing:
        raise ValueError(f"{directory} lacks {', '.join(missing[:5])}")
    return model.eval()


def is_int8(model: nn.Module) -> bool:
    """Whether ``model`` holds any projection as int8 (``Int8Linear``)."""
    return any(isinstance(m, Int8Linear) for m in model.modules())
