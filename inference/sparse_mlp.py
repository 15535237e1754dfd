"""Threshold activation sparsity as drop-in modules of a LLaMA layer, at one of three sites.

- ``h`` (today's): threshold ``|h| = |act(gate·x) · up·x|``; gate and up are read whole, then
  only the down rows of the kept neurons.
- ``gate`` (CATS): threshold ``|act(gate·x)|``; gate is read whole, up and down only for the
  kept neurons (``kernels.gate_ffn``).
- ``input`` (TEAL): threshold the input of every projection (x before q/k/v and gate/up, the
  attention output before o, h before down); each projection is a ``SparseLinear`` that reads
  only the rows of its transposed weight (its columns) for the kept inputs.

``inference.sparsify.sparsify(model, policy)`` swaps them in. Weights are re-laid out once, in
place (down transposed; for ``input`` every projection transposed), never copied: each module's
``weight`` stays a view, so state-dict keys and values are unchanged. One decoded token (batch 1)
takes the skipping path; a prompt, or ``skipping = False`` (the reference), computes the same
output by masking densely. At threshold 0 nothing is masked: the dense computation.

While ``recording``, each call appends the share of kept activations to ``active_fractions``
(for ``input``: of the layer's projection weights, attention included) and the weights it read
to ``read_weights`` (MLP); a ``SparseLinear`` records its own ``read_weights``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from inference import triton_kernels
from inference.int8 import Int8Linear, triton_runs_on
from inference.kernels import (
    compiled_kernels,
    dense_linear,
    gate_ffn,
    h_ffn,
    input_matvec,
    is_silu,
)
from inference.policies import SITES
from inference.quantized import QuantLinear, rounded_activation

# Input-site thresholds per layer, in this order: the inputs of q/k/v, o, gate/up and down.
INPUT_GROUPS = ("qkv", "o", "gate_up", "down")
ATTENTION_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP_PROJECTIONS = ("gate_proj", "up_proj", "down_proj")


def _transposed_view(linear: nn.Linear) -> None:
    """Store ``linear.weight`` transposed (``[in, out]`` contiguous) in place, keeping ``weight``
    a ``[out, in]`` view of it: a column of the matrix becomes a contiguous row."""
    if isinstance(linear, Int8Linear):
        linear.set_transposed(True)
        return
    weight = linear.weight
    if weight.t().is_contiguous():
        return
    with torch.no_grad():
        weight_t = weight.t().contiguous()
    linear.weight = nn.Parameter(weight_t.t(), requires_grad=False)


def _lay_out(linear: nn.Module, transposed: bool) -> None:
    """``linear`` stored transposed (a column as a contiguous row) or as it was loaded: in place
    for fp32; GGUF blocks requantized from the file's, or the file's own (``QuantLinear``)."""
    if isinstance(linear, QuantLinear):
        linear.set_layout("transposed" if transposed else "file")
    elif transposed:
        _transposed_view(linear)
    else:
        row_major(linear)


def row_major(linear: nn.Linear) -> None:
    """Undo ``_transposed_view``: ``weight`` contiguous ``[out, in]`` again."""
    if isinstance(linear, Int8Linear):
        linear.set_transposed(False)
    elif not linear.weight.is_contiguous():
        with torch.no_grad():
            linear.weight = nn.Parameter(linear.weight.contiguous(), requires_grad=False)


def project(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``module(x)``; a plain ``nn.Linear`` without hooks as ``kernels.dense_linear`` on its
    weight (a module call costs a few microseconds, ~200 of them a token on the shipped model;
    one token takes the compiled GEMV). Hooks (the profiler's) keep the module call."""
    if type(module) is nn.Linear and not (module._forward_hooks or module._forward_pre_hooks):
        if module.bias is None:
            return dense_linear(x, module.weight)
        return F.linear(x, module.weight, module.bias)
    return module(x)


class SparseLinear(nn.Linear):
    """TEAL's projection: ``W · (x masked to |x| >= threshold)``. The weight is stored transposed,
    so for one token only the rows of ``weight.t()`` of the kept inputs are read
    (``kernels.input_matvec``). ``part`` is ``"attention"`` or ``"mlp"`` (for telemetry)."""

    def __init__(self, linear: nn.Linear, part: str) -> None:
        nn.Module.__init__(self)
        assert linear.bias is None, "LLaMA projections have no biases"
        self.in_features, self.out_features = linear.in_features, linear.out_features
        _transposed_view(linear)
        self.weight = linear.weight
        self.register_parameter("bias", None)
        self.part = part
        self.threshold = 0.0
        self.skipping = True
        self.use_kernel = True
        self.recording = False
        self.read_weights: list[int] = []
        self.last_kept = 0.0  # inputs kept in the last call (mean over its tokens)
        self.last_read_rows = 0  # rows of weight.t() read in the last call

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [B, S, in] -> [B, S, out]
        read_rows = self.in_features
        if self.threshold <= 0.0:
            out, kept = dense_linear(x, self.weight), float(self.in_features)
        elif x.shape[:-1].numel() == 1 and self.skipping:
            weight_t = self.weight.t()  # [in, out], contiguous
            out, kept = input_matvec(
                weight_t, x.reshape(-1), self.threshold, use_kernel=self.use_kernel
            )
            out, read_rows = out.view(*x.shape[:-1], -1), kept
        else:  # a prompt, or the masked reference: every weight is read
            keep = x.abs() >= self.threshold
            out = F.linear(x * keep, self.weight)
            kept = keep.float().sum(-1).mean().item()
        self.note(kept, read_rows)
        return out

    def note(self, kept: float, read_rows: int) -> None:
        """Record one call: ``kept`` inputs (mean over its tokens), ``read_rows`` rows of
        ``weight.t()`` read (also for the compiled decode step, which computes the call)."""
        # Plain attributes, set past nn.Module.__setattr__ (its checks cost ~5 us a call, 420
        # calls a token on the shipped model).
        self.__dict__.update(last_kept=kept, last_read_rows=read_rows)
        if self.recording:
            self.read_weights.append(read_rows * self.out_features)

    def to_linear(self, *, transposed: bool = False) -> nn.Linear:
        """An ``nn.Linear`` holding the same weight, row-major again unless ``transposed``."""
        linear = nn.Linear(self.in_features, self.out_features, bias=False, device="meta")
        linear.weight = self.weight
        if not transposed:
            row_major(linear)
        return linear

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, {self.part}, threshold={self.threshold:g}"


class SparseQuantLinear(QuantLinear):
    """``SparseLinear`` on GGUF blocks: the blocks re-laid out transposed (``[in, out]``,
    requantized from the file's), so one token reads only the block rows of its kept inputs
    (``quant_input_matvec``); threshold 0 reads them all (``quant_rows_axpy``)."""

    def __init__(self, linear: QuantLinear, part: str) -> None:
        super().__init__(linear.file_blocks, linear.qtype, linear.in_features, linear.out_features)
        self._transposed = linear._transposed  # a re-laid copy, if any
        self.set_layout("transposed")
        self.part = part
        self.threshold = 0.0
        self.skipping = True
        self.use_kernel = True
        self.recording = False
        self.read_weights: list[int] = []
        self.last_kept = 0.0
        self.last_read_rows = 0

    note = SparseLinear.note

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [B, S, in] -> [B, S, out]
        read_rows = self.in_features
        module = compiled_kernels() if self.use_kernel else None
        if self.threshold <= 0.0:
            out, kept = super().forward(x), float(self.in_features)
        elif x.shape[:-1].numel() == 1 and self.skipping and module is not None:
            out, kept = module.quant_input_matvec(
                self.blocks, self.qtype, x.reshape(-1).contiguous(), float(self.threshold)
            )
            out, read_rows = out.view(*x.shape[:-1], -1), kept
        else:  # a prompt, or the masked reference: every weight is read
            keep = x.abs() >= self.threshold
            out = F.linear(x * keep, self.dequantized())
            kept = keep.float().sum(-1).mean().item()
        self.note(kept, read_rows)
        return out

    def to_linear(self, *, transposed: bool = False) -> QuantLinear:
        """A ``QuantLinear`` on the same blocks, in the file's layout unless ``transposed``."""
        linear = QuantLinear(self.file_blocks, self.qtype, self.in_features, self.out_features)
        linear._transposed = self._transposed
        linear.set_layout("transposed" if transposed else "file")
        return linear

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, {self.part}, threshold={self.threshold:g}"


class SparseInt8Linear(Int8Linear):
    """``SparseLinear`` on int8 weights (``int8.Int8Linear``), stored transposed: one token
    reads only the int8 rows of its kept inputs (``triton_kernels.input_matvec``, where Triton
    runs: else the masked reference on the dequantized matrix, which reads every row)."""

    def __init__(self, linear: Int8Linear, part: str) -> None:
        super().__init__(linear.weight, linear.scales)
        self.set_transposed(True)
        self.part = part
        self.threshold = 0.0
        self.skipping = True
        self.use_kernel = True
        self.recording = False
        self.read_weights: list[int] = []
        self.last_kept = 0.0
        self.last_read_rows = 0

    note = SparseLinear.note

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [B, S, in] -> [B, S, out]
        read_rows = self.in_features
        one_token = x.shape[:-1].numel() == 1 and self.skipping
        if self.threshold <= 0.0:
            out, kept = super().forward(x), float(self.in_features)
        elif one_token and self.use_kernel and triton_runs_on(x.device):
            out, kept = triton_kernels.input_matvec(
                self.kernel_weight, x.reshape(-1), self.threshold
            )
            kept = int(kept)
            out, read_rows = out.view(*x.shape[:-1], -1), kept
        else:  # a prompt, or the masked reference: every weight is read
            keep = x.abs() >= self.threshold
            out = F.linear(x * keep, self.dequantized(x.dtype))
            kept = keep.float().sum(-1).mean().item()
        self.note(kept, read_rows)
        return out

    def to_linear(self, *, transposed: bool = False) -> Int8Linear:
        """An ``Int8Linear`` holding the same weights, row-major again unless ``transposed``."""
        linear = Int8Linear(self.weight, self.scales)
        linear.set_transposed(transposed)
        return linear

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, {self.part}, threshold={self.threshold:g}"


SPARSE_LINEARS = (SparseLinear, SparseQuantLinear, SparseInt8Linear)


class SparseMLP(nn.Module):
    """A LLaMA MLP thresholded at ``site`` (``SITES``), sharing the wrapped module's projections.

    ``threshold`` is one number for ``h``/``gate``; for ``input`` it is the four thresholds of
    ``INPUT_GROUPS`` (``set_threshold`` hands them to the projections, the attention ones of the
    same layer included, which ``attach_attention`` gives).
    """

    def __init__(self, mlp: nn.Module, threshold: float = 0.0) -> None:
        super().__init__()
        for name in (*MLP_PROJECTIONS, "act_fn"):
            if not hasattr(mlp, name):
                raise TypeError(f"{type(mlp).__name__} has no {name}; expected a LLaMA-style MLP")
        self.gate_proj = mlp.gate_proj
        self.up_proj = mlp.up_proj
        self.down_proj = mlp.down_proj
        self.act_fn = mlp.act_fn
        self.quantized = isinstance(self.down_proj, QuantLinear)
        # The site the weights are laid out for; None: as loaded (GGUF blocks, until a site
        # needs them re-laid; a dense policy goes back to the file's blocks). fp32: down is
        # transposed at once (exact, and the dense GEMV reads either layout).
        self.layout_for: str | None = getattr(mlp, "layout_for", None)
        if not self.quantized:
            _transposed_view(self.down_proj)  # a neuron's down column as a contiguous row
            self.layout_for = getattr(mlp, "site", "h")
        self.site = "h"
        self.threshold: float | tuple[float, ...] = float(threshold)
        self.skipping = True
        self.use_kernel = True
        self.recording = False
        self.active_fractions: list[float] = []
        self.read_weights: list[int] = []
        self._attention: tuple[SparseLinear, ...] = ()

    @property
    def num_neurons(self) -> int:
        return self.down_proj.in_features

    @property
    def dense_weights(self) -> int:
        """Weights one dense call reads: gate, up and down."""
        return 3 * self.down_proj.in_features * self.down_proj.out_features

    def set_site(self, site: str | None, attention: nn.Module | None = None) -> None:
        """Re-lay out for ``site`` (in place; nothing to do when it is already laid out so).
        ``attention``: the layer's attention module, whose projections the ``input`` site swaps
        for ``SparseLinear`` (and any other site swaps back). ``None`` (GGUF blocks only): the
        file's own blocks everywhere, for a dense policy (the ``h`` site at threshold 0)."""
        if site not in SITES and not (site is None and self.quantized):
            raise ValueError(f"site must be one of {SITES}, got {site!r}")
        sparse = site == "input"
        down_transposed = site is not None or not self.quantized
        for name in MLP_PROJECTIONS:
            self._swap(self, name, sparse, "mlp", down_transposed)
        if attention is not None:
            for name in ATTENTION_PROJECTIONS:
                self._swap(attention, name, sparse, "attention", down_transposed)
            linears = (getattr(attention, name) for name in ATTENTION_PROJECTIONS)
            self._attention = tuple(linears) if sparse else ()
        if not sparse and self.quantized:  # h, gate: down's rows are skipped, so transposed
            _lay_out(self.down_proj, down_transposed)
        self.site = site or "h"
        self.layout_for = site
        self.set_threshold(0.0)

    @staticmethod
    def _swap(owner: nn.Module, name: str, sparse: bool, part: str, down_transposed: bool) -> None:
        linear = getattr(owner, name)
        if sparse and not isinstance(linear, SPARSE_LINEARS):
            cls = (
                SparseQuantLinear if isinstance(linear, QuantLinear)
                else SparseInt8Linear if isinstance(linear, Int8Linear)
                else SparseLinear
            )  # fmt: skip
            setattr(owner, name, cls(linear, part))
        elif not sparse and isinstance(linear, SPARSE_LINEARS):  # down stays transposed
            setattr(
                owner, name, linear.to_linear(transposed=name == "down_proj" and down_transposed)
            )

    def set_threshold(self, threshold: float | tuple[float, ...]) -> None:
        """One threshold (``h``, ``gate``), or one per ``INPUT_GROUPS`` (``input``; a single
        number applies to all four)."""
        if self.site != "input":
            self.threshold = float(threshold)
            return
        groups = tuple(threshold) if isinstance(threshold, tuple | list) else (threshold,) * 4
        if len(groups) != len(INPUT_GROUPS):
            raise ValueError(f"the input site takes {len(INPUT_GROUPS)} thresholds: {INPUT_GROUPS}")
        self.threshold = tuple(float(t) for t in groups)
        qkv, o, gate_up, down = self.threshold
        for linear, t in zip(self._attention, (qkv, qkv, qkv, o), strict=False):
            linear.threshold = t
        self.gate_proj.threshold = self.up_proj.threshold = gate_up
        self.down_proj.threshold = down

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [B, S, D] -> out: [B, S, D]
        if self.site == "input":
            return self._input(x)
        one_token = x.shape[:-1].numel() == 1 and self.skipping
        if self.threshold <= 0.0:
            h = self.act_fn(project(self.gate_proj, x)) * project(self.up_proj, x)
            self.note_kept(-1)
            return project(self.down_proj, h)
        if one_token:
            return self._skipping(x)
        a = self.act_fn(self.gate_proj(x))
        h = a * self.up_proj(x)
        keep = (h if self.site == "h" else a).abs() >= self.threshold
        self._record(keep.float().mean().item(), self.dense_weights)
        return self.down_proj(h * keep)

    def _skipping(self, x: torch.Tensor) -> torch.Tensor:
        """One token, reading only the kept neurons' rows (down; and up at the gate site)."""
        x1 = x.reshape(-1)
        if self.quantized:
            out, kept = self._skipping_blocks(x1)
            self.note_kept(kept)
            return out.view(x.shape)
        if isinstance(self.down_proj, Int8Linear):
            out, kept = self._skipping_int8(x1)
            self.note_kept(kept)
            return out.view(x.shape)
        weights = (self.gate_proj.weight, self.up_proj.weight, self.down_proj.weight.t())
        kernel = h_ffn if self.site == "h" else gate_ffn
        out, kept = kernel(*weights, x1, self.threshold, self.act_fn, use_kernel=self.use_kernel)
        self.note_kept(kept)
        return out.view(x.shape)

    def _skipping_int8(self, x1: torch.Tensor) -> tuple[torch.Tensor, int]:
        """``_skipping`` on int8 weights (down transposed): the Triton int8 kernels where they
        run, else the PyTorch path on the dequantized matrices."""
        gate, up, down = self.gate_proj, self.up_proj, self.down_proj
        if self.use_kernel and triton_runs_on(x1.device):
            kernel = triton_kernels.h_ffn if self.site == "h" else triton_kernels.gate_ffn
            weights = (gate.kernel_weight, up.kernel_weight, down.kernel_weight)
            out, kept = kernel(*weights, x1, self.threshold, self.act_fn)
            return out, int(kept)
        kernel = h_ffn if self.site == "h" else gate_ffn
        dtype = x1.dtype
        weights = (gate.dequantized(dtype), up.dequantized(dtype),
                   down.dequantized(dtype).t().contiguous())  # fmt: skip
        return kernel(*weights, x1, self.threshold, self.act_fn, use_kernel=False)

    def _skipping_blocks(self, x1: torch.Tensor) -> tuple[torch.Tensor, int]:
        """``_skipping`` on GGUF blocks (down laid out transposed): the compiled kernel, or
        the PyTorch path on the dequantized blocks."""
        gate, up, down = self.gate_proj, self.up_proj, self.down_proj
        module = compiled_kernels() if self.use_kernel and is_silu(self.act_fn) else None
        if module is not None:
            kernel = module.quant_h_ffn if self.site == "h" else module.quant_gate_ffn
            return kernel(
                gate.blocks, gate.qtype, up.blocks, up.qtype, down.blocks, down.qtype,
                x1.contiguous(), float(self.threshold),
            )  # fmt: skip
        kernel = h_ffn if self.site == "h" else gate_ffn
        weights = (gate.dequantized(), up.dequantized(), down.dequantized().t().contiguous())
        # gate and up in the file's layout take x rounded, as their GEMV does (QuantLinear)
        x1 = rounded_activation(x1)
        return kernel(*weights, x1, self.threshold, self.act_fn, use_kernel=False)

    def note_kept(self, kept: int) -> None:
        """Record one token at the ``h`` or ``gate`` site that kept ``kept`` neurons (-1: its
        threshold was 0 and the MLP ran dense)."""
        if kept < 0:
            self._record(1.0, self.dense_weights)
            return
        d, f = self.down_proj.out_features, self.num_neurons
        read = (2 * f * d + kept * d) if self.site == "h" else (f * d + 2 * kept * d)
        self._record(kept / f, read)

    def _input(self, x: torch.Tensor) -> torch.Tensor:
        for linear in self.input_linears:  # set only on a change: nn.Module.__setattr__ is slow
            if (linear.skipping, linear.use_kernel) != (self.skipping, self.use_kernel):
                linear.skipping, linear.use_kernel = self.skipping, self.use_kernel
        out = self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))
        self.note_input()
        return out

    @property
    def input_linears(self) -> tuple[SparseLinear, ...]:
        """At the ``input`` site, the layer's seven projections: q, k, v, o, gate, up, down."""
        return (*self._attention, self.gate_proj, self.up_proj, self.down_proj)

    def note_input(self) -> None:
        """Record one call at the ``input`` site from its projections' last calls."""
        if self.recording:
            linears = self.input_linears
            # kept inputs x outputs = weights used; over all the layer's projection weights
            used = sum(lin.last_kept * lin.out_features for lin in linears)
            total = sum(lin.in_features * lin.out_features for lin in linears)
            mlp = (self.gate_proj, self.up_proj, self.down_proj)
            read = sum(lin.last_read_rows * lin.out_features for lin in mlp)
            self._record(used / total, read)

    def _record(self, active_fraction: float, read: int) -> None:
        if self.recording:
            self.active_fractions.append(active_fraction)
            self.read_weights.append(read)

    def extra_repr(self) -> str:
        return f"site={self.site}, threshold={self.threshold}"


def sparse_mlps(model: nn.Module) -> list[SparseMLP]:
    """The ``SparseMLP`` of each decoder layer, in layer order (empty before ``sparsify``)."""
    return [layer.mlp for layer in model.model.layers if isinstance(layer.mlp, SparseMLP)]


def is_split_hot_cold(model: nn.Module) -> bool:
    """Whether the model's neurons are split hot/cold (``hot_cold.HotColdMLP``, which carries
    the permutation ``order``): the one test for it, here because ``hot_cold`` imports its
    callers."""
    return any(hasattr(mlp, "order") for mlp in sparse_mlps(model))


def attention_linears(model: nn.Module) -> list[SparseLinear]:
    """The attention projections swapped for ``SparseLinear`` (the ``input`` site), all layers."""
    return [m for m in model.modules() if isinstance(m, SPARSE_LINEARS) and m.part == "attention"]


def set_thresholds(
    model: nn.Module, thresholds: list[float | tuple[float, ...]], factor: float = 1.0
) -> None:
    """Set each layer's threshold (times ``factor``) on an already sparsified model (used per
    decode step). A layer's threshold is a number, or a tuple for the ``input`` site."""
    mlps = sparse_mlps(model)
    if len(mlps) != len(thresholds):
        raise ValueError(f"{len(thresholds)} thresholds for {len(mlps)} sparse MLP layers")
    for mlp, threshold in zip(mlps, thresholds, strict=True):
        if isinstance(threshold, tuple | list):
            mlp.set_threshold(tuple(t * factor for t in threshold))
        else:
            mlp.set_threshold(threshold * factor)
