"""The forward passes of one generation: the prompt, then one token at a time.

``decoder_for(model, max_tokens)`` picks one of two implementations of the same computation:

- ``LeanDecoder`` (the default where it applies): the LLaMA layer written out for batch 1 over
  the model's own modules, with a KV cache allocated once for the whole generation and the
  rotary table computed once. The projections and MLPs are called as modules, so every
  threshold site, predictor and hot/cold split runs exactly as under ``transformers``; what goes
  is the per-token bookkeeping around them (masks, cache objects, output classes, hooks), which
  on the shipped 135M model cost about as much as reading its weights.
- ``HFDecoder``: ``transformers``' own forward with a ``DynamicCache``: the reference, and what
  runs for anything the lean path does not cover (``lean_unsupported`` says why).

Both return the last position's logits ``[1, V]``. ``tests/inference/test_decoder.py`` holds
them to equal logits and equal greedy tokens.

On CPU models (fp32, or a GGUF's blocks) whose MLPs are ``SparseMLP`` at any site,
``LeanDecoder`` runs each decoded token through all layers in one compiled call (``DecodeStep``,
``csrc/decode_step.cpp``): the same operations and kernels in the same order, so the same
numbers bit for bit, without the Python around each of them; ``compiled_step_unsupported``
says why it does not apply. On a CUDA device it decodes with ``static_decoder.StaticStep``
instead: fixed shapes, the sites' Triton kernels, each token one CUDA graph replay
(``static_unsupported`` says why it does not apply).
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn
from transformers import DynamicCache

from inference.kernels import compiled_kernels, is_silu
from inference.quantized import QuantLinear
from inference.sparse_mlp import SparseLinear, SparseMLP, SparseQuantLinear, project
from inference.static_decoder import StaticStep, static_unsupported

LEAN_ENV = "INFERENCE_LEAN_DECODER"  # "0": always transformers' forward (the reference)
COMPILED_ENV = "INFERENCE_COMPILED_STEP"  # "0": the lean decoder's Python layer loop
_LEAN_MODEL_TYPES = ("llama",)


class HFDecoder:
    """``transformers``' forward with a ``DynamicCache`` (the reference)."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.cache = DynamicCache(config=model.config)

    def prefill(self, input_ids: torch.Tensor) -> torch.Tensor:
        # input_ids: [1, S] -> logits of the last position: [1, V]
        out = self.model(
            input_ids=input_ids, past_key_values=self.cache, use_cache=True, logits_to_keep=1
        )
        return out.logits[:, -1]

    def step(self, token: torch.Tensor) -> torch.Tensor:
        # token: [1, 1] -> logits: [1, V]
        return self.model(input_ids=token, past_key_values=self.cache, use_cache=True).logits[:, -1]


def lean_unsupported(model: nn.Module) -> str | None:
    """Why ``LeanDecoder`` cannot run ``model`` (None when it can)."""
    config = model.config
    if getattr(config, "model_type", None) not in _LEAN_MODEL_TYPES:
        return f"model type {getattr(config, 'model_type', None)!r} is not LLaMA"
    if getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False):
        return "projections with biases"
    if getattr(config, "pretraining_tp", 1) != 1:
        return "pretraining_tp > 1"
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    if "dynamic" in str(rope.get("rope_type", rope.get("type", "default"))):
        return "a dynamic RoPE (its frequencies depend on the sequence length)"
    if any(hasattr(m, "_hf_hook") for m in model.modules()):
        return "accelerate hooks (a device_map placement)"
    devices = {
        p.device
        for name, p in model.named_parameters()
        if ".mlp." not in name  # a hot/cold split MLP moves its own tensors
    }
    if len(devices) != 1:
        return f"attention and embeddings over several devices ({sorted(map(str, devices))})"
    return None


def decoder_for(model: nn.Module, max_tokens: int):
    """The decoder for one generation of at most ``max_tokens`` positions (prompt included):
    ``LeanDecoder`` where ``lean_unsupported`` finds nothing and ``INFERENCE_LEAN_DECODER`` is not
    ``0`` (with its compiled step unless ``INFERENCE_COMPILED_STEP`` is ``0``), else
    ``HFDecoder``."""
    if os.environ.get(LEAN_ENV, "1") != "0" and lean_unsupported(model) is None:
        compiled = os.environ.get(COMPILED_ENV, "1") != "0"
        return LeanDecoder(model, max_tokens, compiled_step=compiled)
    return HFDecoder(model)


class LeanDecoder:
    """Batch-1 LLaMA forward over the model's modules with a preallocated KV cache.

    ``max_tokens``: the most positions this generation holds (prompt + new tokens); the cache is
    ``[layers, 2, kv_heads, max_tokens, head_dim]`` in the model's dtype on its device.
    ``compiled_step``: decode tokens with ``DecodeStep`` (fp32 CPU) or ``StaticStep`` (CUDA)
    where it applies (False: the Python layer loop, their reference). ``static_step``: use
    ``StaticStep`` (True: also on the CPU, with the kernels interpreted, as the tests do; None:
    on CUDA where it applies).
    """

    def __init__(
        self,
        model: nn.Module,
        max_tokens: int,
        *,
        compiled_step: bool = True,
        static_step: bool | None = None,
    ) -> None:
        config = model.config
        self.model = model
        self.layers = list(model.model.layers[: config.num_hidden_layers])
        attn = self.layers[0].self_attn
        self.head_dim = attn.head_dim
        self.heads = config.num_attention_heads
        self.kv_heads = config.num_key_value_heads
        self.scaling = attn.scaling
        weight = model.model.norm.weight  # fp32 also where the projections are GGUF blocks
        self.device, self.dtype = weight.device, weight.dtype
        self.max_tokens = max_tokens
        self.cache = torch.empty(  # a position is written before attention reads it
            len(self.layers), 2, self.kv_heads, max_tokens, self.head_dim,
            device=self.device, dtype=self.dtype,
        )  # fmt: skip
        positions = torch.arange(max_tokens, device=self.device).unsqueeze(0)
        cos, sin = model.model.rotary_emb(weight[None, :1], positions)  # [1, T, hd] each
        self.cos, self.sin = cos[0], sin[0]
        self.rotation = _rotation_matrix(self.head_dim, self.device, self.dtype)
        norms = [
            n
            for layer in self.layers
            for n in (layer.input_layernorm, layer.post_attention_layernorm)
        ]
        self.norm = _rms_norm if all(map(_plain_fp32_rms_norm, norms)) else _call
        self.length = 0  # positions filled
        self.mlps = [layer.mlp for layer in self.layers]
        self.compiled = self.static = None
        if static_step or (
            static_step is None
            and compiled_step
            and self.device.type == "cuda"
            and static_unsupported(model) is None
            and not _hooked(model)  # a profiler's hooks would not see the step's calls
        ):
            self.static = StaticStep(self)
        elif compiled_step and compiled_step_unsupported(self) is None:
            self.compiled = _decode_step(self)

    def prefill(self, input_ids: torch.Tensor) -> torch.Tensor:
        # input_ids: [1, S] -> logits of the last position: [1, V]
        if self.length:
            raise RuntimeError("prefill once per decoder")
        return self._forward(input_ids)

    def step(self, token: torch.Tensor) -> torch.Tensor:
        # token: [1, 1] -> logits: [1, V]
        stepping = self.compiled is not None or self.static is not None
        if not stepping or not all(m.skipping and m.use_kernel for m in self.mlps):
            return self._forward(token)
        if self.length >= self.max_tokens:
            raise ValueError(f"{self.length + 1} positions exceed this decoder's {self.max_tokens}")
        if self.static is not None:
            logits, kept = self.static(token, self.length)
            self.length += 1
            self._note(kept)
            return logits
        model = self.model.model
        thresholds = []
        for mlp in self.mlps:
            t = mlp.threshold
            thresholds.extend(t if isinstance(t, tuple) else (t, 0.0, 0.0, 0.0))
        h, kept = self.compiled(model.embed_tokens(token), self.length, thresholds)
        self.length += 1
        self._note(kept)
        return project(self.model.lm_head, model.norm(h))[:, -1]

    def _note(self, kept: list[int]) -> None:
        """Hand each module the kept counts of the compiled step, as its own call would record
        them (``DecodeStep``: seven per layer)."""
        for i, mlp in enumerate(self.mlps):
            counts = kept[7 * i : 7 * i + 7]
            if mlp.site != "input":
                mlp.note_kept(counts[0])
                continue
            for linear, n in zip(mlp.input_linears, counts, strict=True):
                linear.note(n, n)
            mlp.note_input()

    def _forward(self, ids: torch.Tensor) -> torch.Tensor:
        s = ids.shape[1]
        start, end = self.length, self.length + s
        if end > self.max_tokens:
            raise ValueError(f"{end} positions exceed this decoder's {self.max_tokens}")
        model = self.model.model
        h = model.embed_tokens(ids)  # [1, S, D]
        rope = self._rope(start, end)
        norm = self.norm
        for i, layer in enumerate(self.layers):
            h = h + self._attention(layer.self_attn, norm(layer.input_layernorm, h), i, rope)
            h = h + layer.mlp(norm(layer.post_attention_layernorm, h))
        self.length = end
        last = model.norm(h[:, -1:])  # [1, 1, D]
        return project(self.model.lm_head, last)[:, -1]

    def _rope(self, start: int, end: int):
        """What ``_attention`` needs to rotate positions ``start:end``: for one token, the
        ``[hd, hd]`` matrix ``diag(cos) + R diag(sin)`` (R: rotate the halves), one matmul for
        all heads; for a prompt, or in bf16/fp16 (where a matmul would round differently from
        ``transformers``' elementwise rotation), the ``cos, sin`` rows."""
        cos, sin = self.cos[start:end], self.sin[start:end]  # [S, hd]
        if end - start == 1 and self.dtype == torch.float32:
            return torch.diag(cos[0]) + self.rotation * sin[0]
        return cos, sin

    def _attention(self, attn: nn.Module, x: torch.Tensor, i: int, rope) -> torch.Tensor:
        # x: [1, S, D] -> [1, S, D]
        s, hd = x.shape[1], self.head_dim
        q, k, v = (project(attn.q_proj, x), project(attn.k_proj, x), project(attn.v_proj, x))
        v = v.view(s, self.kv_heads, hd).transpose(0, 1)  # [KV, S, hd]
        if not isinstance(rope, tuple):  # one fp32 token: q and k rotated by one matmul
            qk = torch.cat((q, k), dim=-1).view(-1, hd) @ rope  # [H + KV, hd]
            q, k = qk[: self.heads].unsqueeze(1), qk[self.heads :].unsqueeze(1)
        else:
            q = _rotate(q.view(s, self.heads, hd).transpose(0, 1), *rope)  # [H, S, hd]
            k = _rotate(k.view(s, self.kv_heads, hd).transpose(0, 1), *rope)  # [KV, S, hd]
        start, end = self.length, self.length + s
        keys, values = self.cache[i, 0], self.cache[i, 1]  # [KV, T, hd]
        keys[:, start:end] = k
        values[:, start:end] = v
        out = F.scaled_dot_product_attention(
            q.unsqueeze(0),
            keys[:, :end].unsqueeze(0),
            values[:, :end].unsqueeze(0),
            is_causal=s > 1,  # several positions only in the prompt, which comes first
            scale=self.scaling,
            enable_gqa=self.heads != self.kv_heads,
        )  # [1, H, S, hd]
        return project(attn.o_proj, out.transpose(1, 2).reshape(1, s, self.heads * hd))


def compiled_step_unsupported(decoder: LeanDecoder) -> str | None:
    """Why ``decoder`` cannot decode with ``DecodeStep`` (None when it can): it computes what the
    Python loop computes only for fp32 activations on the CPU (weights fp32 or GGUF blocks laid
    out for the MLPs' site), plain RMSNorms, ``SparseMLP`` layers (not a
    predictor's or a hot/cold split's) with SiLU, attention projections that are plain
    ``nn.Linear`` (``SparseLinear`` at the input site), and no hooks (a profiler's would not see
    the call)."""
    if decoder.dtype != torch.float32 or decoder.device.type != "cpu":
        return "not fp32 on the CPU"
    if decoder.norm is not _rms_norm:
        return "norms other than a plain fp32 LlamaRMSNorm"
    if compiled_kernels() is None:
        return "the compiled kernels are not built"
    for layer, mlp in zip(decoder.layers, decoder.mlps, strict=True):
        if type(mlp) is not SparseMLP or not is_silu(mlp.act_fn):
            return f"{type(mlp).__name__} layers (only SparseMLP with SiLU)"
        attention = [
            getattr(layer.self_attn, name) for name in ("q_proj", "k_proj", "v_proj", "o_proj")
        ]
        wanted = (
            (SparseLinear, SparseQuantLinear) if mlp.site == "input" else (nn.Linear, QuantLinear)
        )
        if any(type(linear) not in wanted for linear in attention):
            names = " or ".join(cls.__name__ for cls in wanted)
            return f"attention projections other than {names} at the {mlp.site} site"
        if mlp.site == "input" and tuple(mlp.input_linears[:4]) != tuple(attention):
            return "input-site projections not attached to their layer"
    norms = [
        n
        for layer in decoder.layers
        for n in (layer.input_layernorm, layer.post_attention_layernorm)
    ]
    if len({n.variance_epsilon for n in norms}) != 1:
        return "RMSNorms with different epsilons"
    if _hooked(decoder.model):
        return "forward hooks"
    return None


def _hooked(model: nn.Module) -> bool:
    from torch.nn.modules import module as torch_module

    if torch_module._global_forward_hooks or torch_module._global_forward_pre_hooks:
        return True
    return any(m._forward_hooks or m._forward_pre_hooks for m in model.model.layers.modules())


def _decode_step(decoder: LeanDecoder):
    """The compiled ``DecodeStep`` over ``decoder``'s layers (their weights as the modules hold
    them; built once per generation, after ``sparsify`` laid them out)."""
    weights, sites, types, transposed = [], [], [], []
    for layer, mlp in zip(decoder.layers, decoder.mlps, strict=True):
        attn = layer.self_attn
        projections = (
            attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj,
            mlp.gate_proj, mlp.up_proj, mlp.down_proj,
        )  # fmt: skip
        stored = [p.blocks if isinstance(p, QuantLinear) else p.weight for p in projections]
        weights += [
            layer.input_layernorm.weight, *stored[:4], layer.post_attention_layernorm.weight,
            *stored[4:],
        ]  # fmt: skip
        types += [p.qtype if isinstance(p, QuantLinear) else 0 for p in projections]
        transposed += [int(getattr(p, "layout", "") == "transposed") for p in projections]
        sites.append(("h", "gate", "input").index(mlp.site))
    eps = decoder.layers[0].input_layernorm.variance_epsilon  # one for all (checked)
    return compiled_kernels().DecodeStep(
        weights, sites, types, transposed, decoder.cache, decoder.cos, decoder.sin,
        decoder.rotation, float(eps), float(decoder.scaling), decoder.heads, decoder.kv_heads,
    )  # fmt: skip


def _rotation_matrix(hd: int, device, dtype) -> torch.Tensor:
    """``R`` with ``x @ R == cat(-x[hd/2:], x[:hd/2])`` (``transformers``' ``rotate_half``)."""
    half = hd // 2
    r = torch.zeros(hd, hd, device=device, dtype=dtype)
    r[torch.arange(half, hd), torch.arange(half)] = -1.0
    r[torch.arange(half), torch.arange(half, hd)] = 1.0
    return r


def _plain_fp32_rms_norm(norm: nn.Module) -> bool:
    """A LLaMA RMSNorm on fp32 (no hooks), which ``_rms_norm`` computes bit for bit."""
    return (
        type(norm).__name__ == "LlamaRMSNorm"
        and norm.weight.dtype == torch.float32
        and not (norm._forward_hooks or norm._forward_pre_hooks)
    )


def _rms_norm(norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``LlamaRMSNorm`` on fp32 in the same operations, less its two dtype casts."""
    return norm.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon))


def _call(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return module(x)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """RoPE as ``transformers`` applies it (halves rotated). ``x: [heads, S, hd]``,
    ``cos, sin: [S, hd]``."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin
