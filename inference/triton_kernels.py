"""Triton kernels for one decoded token (batch 1) on a GPU: each threshold site reads only the
weight rows of what it keeps, with the threshold applied inside the kernel (no gather, no index).

- ``sparse_rows_matvec``: ``sum over |mask_i| >= t of coef_i * rows[i]`` over a row-major
  ``[R, C]`` matrix (``W.t()`` of a projection, or ``down.t()``): rows whose mask entry falls
  below the threshold are never loaded. The ``input`` site (TEAL) is this with ``mask = coef = x``;
  the ``h`` site's down projection with ``mask = coef = h``.
- ``masked_rows_dot``: ``coef_i * (rows[i] . x)`` for the kept rows only (0 elsewhere): the
  ``gate`` site's (CATS) up projection; without a mask it is a dense GEMV (8-bit weights).
- ``input_matvec``, ``h_ffn``, ``gate_ffn``: the three sites, with ``kernels``' signatures but
  returning the kept count as a device tensor (no host sync, so a CUDA graph can hold them).

Weights are fp16, bf16, fp32 or int8 (``Int8Weight``: symmetric, one fp32 scale per output
feature). Accumulation is fp32. Triton has no bf16 ``atomic_add`` (TEAL's kernel is fp16-only
for that reason); these kernels need none: each program writes its fp32 partial sum of a slice
of rows to its own row of a ``[splits, C]`` buffer and one ``sum(0)`` reduces them, which is
also deterministic (same partials, same order), so greedy tokens never flip between runs.

On CPU tensors the kernels run under Triton's interpreter, which must be asked for with
``TRITON_INTERPRET=1`` (the tests set it in a fixture); CUDA tensors run them compiled, in the
same process. ``kernels`` keeps the torch gather path, the
reference these are tested against.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import triton
from torch import nn
from triton.runtime.interpreter import InterpretedFunction

from inference import triton_source

# Rows one program sums (a multiple of _BLOCK_R) and the tile it loads at a time.
_ROWS_PER_SPLIT = 256
_BLOCK_R = 16
_BLOCK_C = 256
_BLOCK_D = 256  # masked_rows_dot: columns a program loads per step
_DOT_ROWS = 8  # masked_rows_dot: rows a program computes
DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.int8)


@dataclass(frozen=True)
class Int8Weight:
    """An 8-bit matrix: ``values`` int8 in the layout the kernel reads, ``scale`` fp32 with one
    entry per output feature (``weight ≈ values * scale`` along the output axis)."""

    values: torch.Tensor
    scale: torch.Tensor

    @property
    def nbytes(self) -> int:
        return self.values.numel() + 4 * self.scale.numel()


def quantize_int8(weight: torch.Tensor, *, output_axis: int) -> Int8Weight:
    """Symmetric per-output-feature int8 of ``weight`` (2-D; ``output_axis`` 0 for a row-major
    ``[out, in]`` weight, 1 for a stored transpose ``[in, out]``). Rows of all zeros get scale 1."""
    w = weight.float()
    amax = w.abs().amax(dim=1 - output_axis)  # [out]
    scale = torch.where(amax > 0, amax / 127.0, torch.ones_like(amax))
    shaped = scale.unsqueeze(1 - output_axis)
    # in place: a 70B down matrix in fp32 is 0.9 GB a temporary
    values = (w / shaped).round_().clamp_(-127, 127).to(torch.int8).contiguous()
    return Int8Weight(values, scale.contiguous())


def dequantize(weight: Int8Weight, *, output_axis: int, dtype: torch.dtype) -> torch.Tensor:
    """The matrix an ``Int8Weight`` stands for, in ``dtype`` (the tests' reference)."""
    return (weight.values.float() * weight.scale.unsqueeze(1 - output_axis)).to(dtype)


_built: dict[tuple[str, bool], object] = {}


def _kernel(name: str, device: torch.device):
    """The kernel ``triton_source.<name>`` for tensors on ``device``: compiled for a GPU, under
    Triton's interpreter for CPU tensors, which must be asked for (``TRITON_INTERPRET=1``: it is
    slow, for tests). Built once per kind, at its first launch."""
    interpret = device.type == "cpu"
    if interpret and os.environ.get("TRITON_INTERPRET") != "1":
        raise RuntimeError(
            "Triton kernels on CPU tensors run under the interpreter: set TRITON_INTERPRET=1"
        )
    key = (name, interpret)
    if key not in _built:
        source = getattr(triton_source, name)
        _built[key] = InterpretedFunction(source) if interpret else triton.jit(source)
    return _built[key]


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _tile(n: int, most: int) -> int:
    """A power-of-two tile of at most ``most`` covering ``n`` (small matrices, e.g. the tests'
    under the interpreter, get small tiles)."""
    return min(most, max(16, triton.next_power_of_2(n)))


def _threshold_args(threshold: float | torch.Tensor, mask: torch.Tensor):
    """(pointer argument, scalar argument, read from pointer?) for a float or a 0-d tensor (a
    tensor lets a captured CUDA graph take a new threshold each step). A float is rounded to
    ``mask``'s dtype first, as torch's ``mask.abs() >= threshold`` rounds it (bf16: 0.7 is
    0.69921875), so the kernel keeps exactly what the reference keeps."""
    if isinstance(threshold, torch.Tensor):
        return threshold, 0.0, True
    return mask, float(torch.tensor(float(threshold), dtype=mask.dtype)), False


def _split(weight: torch.Tensor | Int8Weight) -> tuple[torch.Tensor, torch.Tensor | None]:
    if isinstance(weight, Int8Weight):
        return weight.values, weight.scale
    return weight, None


def sparse_rows_matvec(
    rows: torch.Tensor | Int8Weight,
    coef: torch.Tensor,
    mask: torch.Tensor,
    threshold: float | torch.Tensor,
    *,
    out_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """``sum over |mask[i]| >= threshold of coef[i] * rows[i]``, loading only those rows.
    ``rows: [R, C]`` row-major (or an ``Int8Weight`` scaled per column), ``coef, mask: [R]``.
    -> ``[C]`` in ``out_dtype`` (default ``coef``'s dtype)."""
    values, scale = _split(rows)
    r, c = values.shape
    assert values.is_contiguous() and coef.shape == mask.shape == (r,), (values.shape, coef.shape)
    rows_per_split = min(_ROWS_PER_SPLIT, _cdiv(r, _BLOCK_R) * _BLOCK_R)
    splits, block_c = _cdiv(r, rows_per_split), _tile(c, _BLOCK_C)
    partial = torch.empty(splits, c, device=values.device, dtype=torch.float32)
    t_ptr, t, from_ptr = _threshold_args(threshold, mask)
    grid = (_cdiv(c, block_c), splits)
    _kernel("sparse_rows", values.device)[grid](
        values, coef.contiguous(), mask.contiguous(), scale if scale is not None else coef,
        t_ptr, partial, t, r, c, ROWS_PER_SPLIT=rows_per_split, BLOCK_R=_BLOCK_R,
        BLOCK_C=block_c, HAS_SCALE=scale is not None, THRESHOLD_PTR=from_ptr,
    )  # fmt: skip
    return partial.sum(0).to(out_dtype or coef.dtype)


def masked_rows_dot(
    rows: torch.Tensor | Int8Weight,
    x: torch.Tensor,
    *,
    mask: torch.Tensor | None = None,
    coef: torch.Tensor | None = None,
    threshold: float | torch.Tensor = 0.0,
) -> torch.Tensor:
    """``coef[i] * (rows[i] . x)`` for rows with ``|mask[i]| >= threshold`` (0 for the others,
    whose rows are never loaded); no ``mask``: every row (a dense GEMV); no ``coef``: 1.
    ``rows: [R, D]`` row-major (or an ``Int8Weight`` scaled per row), ``x: [D]``. -> ``[R]`` fp32"""
    values, scale = _split(rows)
    r, d = values.shape
    assert values.is_contiguous() and x.shape == (d,), (values.shape, x.shape)
    out = torch.empty(r, device=values.device, dtype=torch.float32)
    t_ptr, t, from_ptr = _threshold_args(threshold, mask if mask is not None else x)
    _kernel("masked_rows_dot", values.device)[(_cdiv(r, _DOT_ROWS),)](
        values, x.contiguous(), coef if coef is not None else x,
        mask if mask is not None else x, scale if scale is not None else x, t_ptr, out, t, r, d,
        BLOCK_R=_DOT_ROWS, BLOCK_D=_tile(d, _BLOCK_D), HAS_MASK=mask is not None,
        HAS_COEF=coef is not None, HAS_SCALE=scale is not None, THRESHOLD_PTR=from_ptr,
    )  # fmt: skip
    return out


def linear(x1: torch.Tensor, weight: torch.Tensor | Int8Weight) -> torch.Tensor:
    """Dense ``weight @ x1`` for one token: cuBLAS (``F.linear``) on a float weight, the
    ``masked_rows_dot`` GEMV on an ``Int8Weight`` (row-major ``[out, in]``). -> ``[out]``"""
    if isinstance(weight, Int8Weight):
        return masked_rows_dot(weight, x1).to(x1.dtype)
    return torch.nn.functional.linear(x1, weight)


def _kept(values: torch.Tensor, threshold: float | torch.Tensor) -> torch.Tensor:
    return (values.abs() >= threshold).sum()  # 0-d int64 on the device: no host sync


def input_matvec(
    rows: torch.Tensor | Int8Weight, x1: torch.Tensor, threshold: float | torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """TEAL for one token: ``sum over |x1[i]| >= threshold of x1[i] * rows[i]``; ``rows`` is
    ``W.t()`` (``[in, out]`` contiguous). -> (``[out]`` in ``x1``'s dtype, kept inputs)"""
    return sparse_rows_matvec(rows, x1, x1, threshold), _kept(x1, threshold)


def h_ffn(
    gate: torch.Tensor | Int8Weight,
    up: torch.Tensor | Int8Weight,
    down_t: torch.Tensor | Int8Weight,
    x1: torch.Tensor,
    threshold: float | torch.Tensor,
    act_fn: nn.Module,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``h`` site: gate and up read whole, then the down rows of neurons with
    ``|h| >= threshold`` only. ``gate, up: [F, D]``, ``down_t: [F, D]``, ``x1: [D]``.
    -> (``[D]``, kept neurons)"""
    h = act_fn(linear(x1, gate)) * linear(x1, up)  # [F]
    return sparse_rows_matvec(down_t, h, h, threshold), _kept(h, threshold)


def gate_ffn(
    gate: torch.Tensor | Int8Weight,
    up: torch.Tensor | Int8Weight,
    down_t: torch.Tensor | Int8Weight,
    x1: torch.Tensor,
    threshold: float | torch.Tensor,
    act_fn: nn.Module,
) -> tuple[torch.Tensor, torch.Tensor]:
    """CATS: gate read whole; up and down rows of neurons with ``|act(gate x1)| >= threshold``
    only. Shapes as ``h_ffn``. -> (``[D]``, kept neurons)"""
    a = act_fn(linear(x1, gate))  # [F]
    up_x = masked_rows_dot(up, x1, mask=a, threshold=threshold)  # [F] fp32, 0 if dropped
    h = a * up_x.to(x1.dtype)  # rounded as the reference rounds ``a * (up x1)``
    return sparse_rows_matvec(down_t, h, a, threshold), _kept(a, threshold)


def supported(*tensors: torch.Tensor) -> bool:
    """Whether these kernels take these weights: on a CUDA device, in a dtype of ``DTYPES``."""
    return all(t.device.type == "cuda" and t.dtype in DTYPES for t in tensors)
