"""What one generation cost, gathered around the decode loop (gpt-fast style).

``Telemetry`` is started before the prompt and told when the prefill, the first token and each
decode step end; the sparse MLPs record what they kept while ``recording`` is on. ``finish``
returns the telemetry fields of ``GenerationResult`` (latency, tokens/s, peak memory, active
fraction, weight bytes read per token (MLP, attention, total) from the modules' records of what
they read, per-device weight bytes).
"""

from __future__ import annotations

import resource
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from inference.int8 import Int8Linear
from inference.sparse_mlp import attention_linears


class Telemetry:
    """Timing, memory and activation records of one generation on ``model``'s ``mlps``."""

    def __init__(self, model: nn.Module, mlps: list, clock: Callable[[], float]) -> None:
        self.model, self.mlps, self.clock = model, mlps, clock
        self.device = next(model.parameters()).device
        _reset_peak_rss()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        # Modules that record the weights they read: the MLPs, and the attention projections
        # under the input site (otherwise attention is read whole).
        self.readers = [*mlps, *attention_linears(model)]
        _set_recording(self.readers, True)
        self.start = clock()
        self.prefill_s = self.ttft_s = 0.0
        self.step_latencies_s: list[float] = []  # one whole decode step each: what a reader waits
        self._step_start = 0.0

    def prefill_done(self) -> None:
        self.prefill_s = self.clock() - self.start
        self.prefill_fractions = _take_fractions(self.mlps)
        _take_reads(self.readers)
        self.prefill_share = _take_hot_share(self.mlps)

    def first_token(self) -> None:
        self.ttft_s = self.clock() - self.start

    def step_start(self) -> None:
        self._step_start = self.clock()

    def step_end(self) -> None:
        self.step_latencies_s.append(self.clock() - self._step_start)

    @property
    def last_step_s(self) -> float | None:
        """The previous decode step's latency (None before the first)."""
        return self.step_latencies_s[-1] if self.step_latencies_s else None

    def last_active_fraction(self) -> float:
        """Share of MLP activations kept in the last forward (prefill or decode step)."""
        fractions = [m.active_fractions[-1] for m in self.mlps if m.active_fractions]
        if not fractions:  # no decode step yet: the prompt's last forward
            fractions = [f[-1] for f in self.prefill_fractions]
        return sum(fractions) / len(fractions)

    def finish(self, new_tokens: int) -> dict:
        """Stop recording; the telemetry fields of ``GenerationResult``."""
        _set_recording(self.readers, False)
        decode_fractions = _take_fractions(self.mlps)
        read = bytes_read_per_token(self.model, self.mlps, _take_reads(self.readers))
        decode_share = _take_hot_share(self.mlps)
        latency_s = self.clock() - self.start
        decoded = bool(decode_fractions[0])
        per_layer = decode_fractions if decoded else self.prefill_fractions
        per_layer_mean = [sum(steps) / len(steps) for steps in per_layer]
        active_fraction = sum(per_layer_mean) / len(per_layer_mean)
        steps = self.step_latencies_s
        return {
            "latency_s": latency_s,
            "tokens_per_s": new_tokens / latency_s,
            "peak_rss_bytes": _peak_rss_bytes(),
            "active_fraction": active_fraction,
            "active_fraction_per_layer": per_layer_mean,
            "prefill_s": self.prefill_s,
            "achieved_sparsity": 1.0 - active_fraction,
            "ttft_s": self.ttft_s,
            "cuda_peak_bytes": (
                torch.cuda.max_memory_allocated(self.device) if self.device.type == "cuda" else 0
            ),
            "device": str(self.device),
            "weight_bytes_per_device": weight_bytes_per_device(self.model),
            "hot_activation_share": decode_share if decoded else self.prefill_share,
            "decode_latency_s_per_token": sum(steps) / len(steps) if steps else 0.0,
            **read,
        }


def weight_bytes_per_device(model: nn.Module) -> dict[str, int]:
    """Bytes of the parameters and buffers of ``model`` on each device, e.g. ``{"cpu": n}``."""
    per_device: dict[str, int] = {}
    for tensor in (*model.parameters(), *model.buffers()):  # each tied weight once
        key = str(tensor.device)
        per_device[key] = per_device.get(key, 0) + tensor.numel() * tensor.element_size()
    return per_device


def _set_recording(mlps: list, on: bool) -> None:
    for mlp in mlps:
        mlp.recording = on


def _take_fractions(mlps: list) -> list[list[float]]:
    fractions = [mlp.active_fractions for mlp in mlps]
    for mlp in mlps:
        mlp.active_fractions = []
    return fractions


def _take_reads(readers: list) -> list[list[int]]:
    """Per module, the weights it read in each recorded call (and forget them)."""
    reads = [reader.read_weights for reader in readers]
    for reader in readers:
        reader.read_weights = []
    return reads


def _take_hot_share(mlps: list) -> float:
    """Kept activations served by hot blocks / all kept (only ``HotColdMLP`` records them)."""
    hot = sum(sum(getattr(mlp, "hot_active", [])) for mlp in mlps)
    total = sum(sum(getattr(mlp, "all_active", [])) for mlp in mlps)
    for mlp in mlps:
        if hasattr(mlp, "hot_active"):
            mlp.hot_active, mlp.all_active = [], []
    return hot / total if total else 1.0


def bytes_read_per_token(model: nn.Module, mlps: list, reads: list[list[int]]) -> dict:
    """Weight bytes one decode step read, from the modules' records (``reads``: per module of
    ``mlps`` then of ``attention_linears(model)``, the weights read per call), as the
    ``GenerationResult`` fields. Steps: the calls each MLP recorded; none (only a prompt): the
    dense figures, which a prompt reads."""
    mlp0 = mlps[0]  # a hot/cold split's MLP holds its blocks, not gate_proj
    # int8: a byte a weight and its share of its row's fp32 scale (gate's share: down's rows
    # are longer, so its scales are overcounted by under 0.2 % of a layer's bytes)
    gate = getattr(mlp0, "gate_proj", None)
    element = (
        stored_bytes_per_weight(gate)
        if getattr(mlp0, "quantized", False) or isinstance(gate, Int8Linear)
        else next(mlp0.parameters()).element_size()
    )
    layers = model.model.layers
    dense_mlp = sum(mlp.dense_weights for mlp in mlps)
    dense_attention = sum(
        _weights(getattr(layer.self_attn, name))
        for layer in layers
        for name in ("q_proj", "k_proj", "v_proj", "o_proj")
    )
    # The LM head in its own format's bytes (a GGUF's may differ: Q8_0 beside Q4_1 layers).
    head = _weights(model.lm_head) * stored_bytes_per_weight(model.lm_head) / element
    steps = min(len(r) for r in reads[: len(mlps)])
    mlp, attention = float(dense_mlp), float(dense_attention)
    if steps:
        mlp = sum(sum(r[:steps]) for r in reads[: len(mlps)]) / steps
        if len(reads) > len(mlps):
            attention = sum(sum(r[:steps]) for r in reads[len(mlps) :]) / steps
    skipped = dense_mlp - mlp
    return {
        "weight_bytes_read_per_token": (mlp + attention + head) * element,
        "mlp_weight_bytes_read_per_token": mlp * element,
        "attention_weight_bytes_read_per_token": attention * element,
        "dense_weight_bytes_per_token": float(dense_mlp + dense_attention + head) * element,
        "mlp_bytes_skipped_per_token": skipped * element,
        "mlp_flops_skipped_per_token": 2 * skipped,
        "mlp_bytes_skipped_fraction": skipped / dense_mlp,
    }


def stored_bytes_per_weight(linear: nn.Module) -> float:
    """Bytes a weight of ``linear`` takes as stored: its dtype's size, or a GGUF block format's
    share (Q4_1: 20 bytes a block of 32 = 0.625)."""
    if hasattr(linear, "bytes_per_weight"):
        return linear.bytes_per_weight
    return linear.weight.element_size()


def _weights(linear: nn.Module) -> int:
    return linear.in_features * linear.out_features


def _reset_peak_rss() -> None:
    # Linux resets VmHWM (the peak RSS) when "5" is written to clear_refs; elsewhere the peak
    # stays the process's lifetime peak.
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _peak_rss_bytes() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
