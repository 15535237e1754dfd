"""Batch-1 decoding whose shapes never change, so that a GPU replays each token as one CUDA graph
instead of launching ~20 kernels a layer from Python (gpt-fast's pattern: static KV cache,
position as a tensor, the whole step captured once).

``StaticStep`` is a ``LeanDecoder``'s decode step (over its KV cache and rotary tables; the
prompt keeps ``LeanDecoder``'s pass; a CUDA model gets this step). Every tensor the step reads
or writes has a fixed shape and address: the token and position are tensors, the new key and
value are written at the position with ``index_copy_``, attention reads the whole cache with
the later positions masked, and each site's threshold comes from a ``[layers, 4]`` tensor
(``INPUT_GROUPS``' order; the ``h``/``gate`` threshold in column 0) through the Triton kernels
(``triton_kernels``), which keep their kept counts on the device too. Nothing in the step waits
for the host.

On CUDA the step is captured per *signature* (each layer's site and which of its thresholds are
positive: a zero threshold runs the dense cuBLAS projection, the dense computation exactly) and
replayed; a new threshold value only rewrites the tensor. On the CPU (the tests) the same step
runs eagerly, the kernels under Triton's interpreter. The counts are read back once a token, when
the logits are, and handed to the modules' telemetry as ``LeanDecoder``'s compiled step does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from inference import triton_kernels
from inference.int8 import Int8Linear
from inference.sparse_mlp import INPUT_GROUPS, SparseInt8Linear, SparseLinear, SparseMLP

MAX_GRAPHS = 8  # CUDA graphs one decoder captures (one per signature)


def static_unsupported(model: nn.Module) -> str | None:
    """Why ``StaticDecoder`` cannot decode ``model`` (None when it can): every layer's MLP a
    ``SparseMLP`` (any site, dense at threshold 0) whose weights the Triton kernels take (fp16,
    bf16, fp32, or int8 ``Int8Linear``), and attention projections that are plain ``nn.Linear``
    or the input site's ``SparseLinear`` (their int8 kinds alike)."""
    for layer in model.model.layers:
        mlp = layer.mlp
        if type(mlp) is not SparseMLP:
            return f"{type(mlp).__name__} layers (only SparseMLP)"
        names = ("q_proj", "k_proj", "v_proj", "o_proj")
        sparse = mlp.site == "input"
        wanted = (SparseLinear, SparseInt8Linear) if sparse else (nn.Linear, Int8Linear)
        if any(type(getattr(layer.self_attn, name)) not in wanted for name in names):
            return f"attention projections other than {wanted[0].__name__} at the {mlp.site} site"
        q_proj = layer.self_attn.q_proj
        dtype = q_proj.weight.dtype
        if not isinstance(q_proj, Int8Linear) and dtype not in triton_kernels.DTYPES[:3]:
            return f"weights in {dtype} (the kernels take fp16, bf16, fp32, int8)"
    return None


class StaticStep:
    """A ``LeanDecoder``'s decode step with fixed shapes: ``step(token, length)`` decodes one
    token at position ``length`` into the decoder's KV cache and returns (logits ``[1, V]``, the
    kept counts as ``LeanDecoder._note`` takes them: seven per layer).

    ``graphs``: capture and replay CUDA graphs (default: on a CUDA device).
    """

    def __init__(self, decoder, *, graphs: bool | None = None) -> None:
        reason = static_unsupported(decoder.model)
        if reason is not None:
            raise ValueError(f"the static decode step cannot run this model: {reason}")
        self.decoder = decoder
        # Attention reads every position and masks the later ones, whose scores get weight 0;
        # 0 * NaN is NaN, so the cache must not start as whatever memory held.
        decoder.cache.zero_()
        device, dtype = decoder.device, decoder.dtype
        self.device = device
        self.graphs = device.type == "cuda" if graphs is None else graphs
        n = len(decoder.layers)
        self.token = torch.zeros(1, 1, dtype=torch.long, device=device)
        self.position = torch.zeros(1, dtype=torch.long, device=device)
        self.thresholds = torch.zeros(n, len(INPUT_GROUPS), dtype=dtype, device=device)
        self.positions = torch.arange(decoder.max_tokens, device=device)
        self._captured: dict[tuple, tuple[torch.cuda.CUDAGraph, tuple]] = {}

    def __call__(self, token: torch.Tensor, length: int) -> tuple[torch.Tensor, list[int]]:
        # token: [1, 1] -> logits: [1, V], kept counts
        mlps = self.decoder.mlps
        thresholds = [_groups(mlp) for mlp in mlps]
        self.token.copy_(token.view(1, 1))
        self.position.fill_(length)
        self.thresholds.copy_(torch.tensor(thresholds, dtype=self.thresholds.dtype))
        signature = tuple(
            (mlp.site, *(t > 0 for t in row)) for mlp, row in zip(mlps, thresholds, strict=True)
        )
        logits, kept = self._run(signature)
        return logits.clone(), kept.flatten().tolist()  # the one host sync of a token

    def _run(self, signature: tuple) -> tuple[torch.Tensor, torch.Tensor]:
        # Each graph keeps its own memory pool: past MAX_GRAPHS signatures (a policy whose
        # layers keep switching between dense and thresholded), new ones run uncaptured.
        if not self.graphs or (
            signature not in self._captured and len(self._captured) >= MAX_GRAPHS
        ):
            return self.decode_step(signature)
        if signature not in self._captured:
            stream = torch.cuda.Stream()  # warm up (compile the kernels) off the capture
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                self.decode_step(signature)
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                outputs = self.decode_step(signature)
            self._captured[signature] = (graph, outputs)
        graph, outputs = self._captured[signature]
        graph.replay()
        return outputs

    def decode_step(self, signature: tuple) -> tuple[torch.Tensor, torch.Tensor]:
        """One token through every layer from ``self.token`` at ``self.position`` with
        ``self.thresholds``; writes the KV cache. ``signature``: per layer its site and which of
        its four thresholds are positive. -> (logits ``[1, V]``, kept counts ``[layers, 7]``)"""
        decoder = self.decoder
        model, norm = decoder.model.model, decoder.norm
        h = model.embed_tokens(self.token).view(-1)  # [D]
        cos, sin = decoder.cos[self.position], decoder.sin[self.position]  # [1, hd]
        visible = (self.positions <= self.position).view(1, -1)  # [1, T]: up to this position
        kept = []
        for i, (layer, layer_signature) in enumerate(zip(decoder.layers, signature, strict=True)):
            site, *positive = layer_signature
            counts: list[torch.Tensor] = []
            x = norm(layer.input_layernorm, h)
            h = h + self._attention_step(layer.self_attn, x, i, cos, sin, visible, positive,
                                         counts)  # fmt: skip
            x = norm(layer.post_attention_layernorm, h)
            h = h + self._mlp_step(layer.mlp, x, i, site, positive, counts)
            kept.append(torch.stack(counts))
        logits = F.linear(model.norm(h), decoder.model.lm_head.weight)
        return logits.view(1, -1), torch.stack(kept)

    def _project(self, linear: nn.Linear, x: torch.Tensor, i: int, group: int, positive: list,
                 counts: list) -> torch.Tensor:  # fmt: skip
        """One projection of one token (``x: [in]``): the input site's kernel where its
        threshold is positive, else dense; appends its kept inputs to ``counts`` if at the
        input site."""
        if not isinstance(linear, SparseLinear | SparseInt8Linear):
            return _dense(linear, x)
        if not positive[group]:
            counts.append(self._constant(linear.in_features))
            return _dense(linear, x)
        out, kept = triton_kernels.input_matvec(_rows(linear), x, self.thresholds[i, group])
        counts.append(kept)
        return out

    def _attention_step(self, attn, x, i, cos, sin, visible, positive, counts):
        d = self.decoder
        hd = d.head_dim
        q, k, v = (
            self._project(getattr(attn, name), x, i, 0, positive, counts)
            for name in ("q_proj", "k_proj", "v_proj")
        )
        # RoPE as transformers applies it (x * cos + rotate_half(x) * sin); ``rotation`` holds
        # only 0 and ±1, so ``@ rotation`` is rotate_half exactly, in any dtype.
        q = q.view(d.heads, 1, hd)
        k = k.view(d.kv_heads, 1, hd)
        q = q * cos + (q @ d.rotation) * sin  # [H, 1, hd]
        k = k * cos + (k @ d.rotation) * sin  # [KV, 1, hd]
        keys, values = d.cache[i, 0], d.cache[i, 1]  # [KV, T, hd]
        keys.index_copy_(1, self.position, k)
        values.index_copy_(1, self.position, v.view(d.kv_heads, 1, hd))
        out = F.scaled_dot_product_attention(
            q.unsqueeze(0), keys.unsqueeze(0), values.unsqueeze(0), attn_mask=visible,
            scale=d.scaling, enable_gqa=d.heads != d.kv_heads,
        )  # fmt: skip  # [1, H, 1, hd]
        return self._project(attn.o_proj, out.reshape(-1), i, 1, positive, counts)

    def _mlp_step(self, mlp: SparseMLP, x, i, site, positive, counts) -> torch.Tensor:
        if site == "input":
            gate = self._project(mlp.gate_proj, x, i, 2, positive, counts)
            up = self._project(mlp.up_proj, x, i, 2, positive, counts)
            return self._project(mlp.down_proj, mlp.act_fn(gate) * up, i, 3, positive, counts)
        if not positive[0]:  # dense: -1 tells the telemetry so (SparseMLP.note_kept)
            counts.extend([self._constant(-1)] + [self._constant(0)] * 6)
            h = mlp.act_fn(_dense(mlp.gate_proj, x)) * _dense(mlp.up_proj, x)
            return _dense(mlp.down_proj, h)
        weights = (mlp.gate_proj, mlp.up_proj)
        weights = (*(w.kernel_weight if isinstance(w, Int8Linear) else w.weight for w in weights),
                   _rows(mlp.down_proj))  # fmt: skip
        kernel = triton_kernels.h_ffn if site == "h" else triton_kernels.gate_ffn
        out, kept = kernel(*weights, x, self.thresholds[i, 0], mlp.act_fn)
        counts.extend([kept] + [self._constant(0)] * 6)
        return out

    def _constant(self, value: int) -> torch.Tensor:
        return torch.full((), value, dtype=torch.long, device=self.device)


def _dense(linear: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """One token through a whole projection: cuBLAS on a float weight, the Triton int8 GEMV on
    an ``Int8Linear``."""
    if isinstance(linear, Int8Linear):
        return linear.matvec(x)
    return F.linear(x, linear.weight)


def _rows(linear: nn.Module) -> torch.Tensor | triton_kernels.Int8Weight:
    """A projection stored transposed as the kernels read it: ``[in, out]`` rows."""
    if isinstance(linear, Int8Linear):
        assert linear.transposed, "the row-skipping kernels read int8 weights transposed"
        return linear.kernel_weight
    return linear.weight.t()


def _groups(mlp: SparseMLP) -> list[float]:
    """A layer's four thresholds (``INPUT_GROUPS``; ``h``/``gate``: its one threshold first)."""
    t = mlp.threshold
    return list(t) if isinstance(t, tuple) else [t, 0.0, 0.0, 0.0]
