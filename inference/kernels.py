"""Kernels for one decoded token that read only the weights of active neurons or kept inputs.

- ``gathered_ffn``: gate, up and down rows of the active neurons (``PredictorMLP``, the cold
  block of ``HotColdMLP``);
- the threshold sites, selection included (one call each, returning the output and how many
  rows were kept): ``input_matvec`` (TEAL: a projection's kept inputs), ``h_ffn`` (threshold on
  ``|h|``: down rows of kept neurons) and ``gate_ffn`` (CATS: up and down rows of kept neurons).

Each calls the compiled CPU kernel (``csrc/kernels.cpp``) where that applies (fp32 on the
CPU), the Triton kernels (``triton_kernels``) for the threshold sites on a CUDA device, and a
PyTorch path otherwise (other dtypes on the CPU; ``use_kernel=False``: gathered rows with torch
ops), which gives the same numbers and is the reference the others are tested against. The same
kernels on a GGUF's blocks (``csrc/quant_kernels.cpp``, formats in ``csrc/quant_formats.h``)
are called from ``inference.quantized``.

``torch.utils.cpp_extension.load`` compiles the project's own C++ files with the system compiler
(about a minute once per checkout and version of the sources; cached under
``~/.cache/torch_extensions/inference``, or ``$TORCH_EXTENSIONS_DIR/inference``). Where it
cannot be built (no compiler), or with ``INFERENCE_KERNELS=0``, ``compiled_gathered_ffn()``
returns ``None``.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from inference import triton_kernels

_CSRC = Path(__file__).parent / "csrc"
_SOURCES = [_CSRC / "kernels.cpp", _CSRC / "quant_kernels.cpp", _CSRC / "decode_step.cpp"]
_HEADERS = [_CSRC / "kernels.h", _CSRC / "quant_formats.h"]
KERNELS_ENV = "INFERENCE_KERNELS"  # "0": no compiled kernels (the PyTorch paths)
_state: dict = {}


def _build_name() -> str:
    """The extension's name, with a digest of its sources and header: each version of the code
    gets its own build in the cache (checkouts of two versions on one machine, e.g. git
    worktrees, would otherwise rebuild over each other, and a header change alone would not
    rebuild)."""
    digest = hashlib.sha256()
    for path in (*_SOURCES, *_HEADERS):
        digest.update(path.read_bytes())
    return f"inference_sparse_kernels_{digest.hexdigest()[:12]}"


def build_directory(name: str) -> Path:
    """Where the extension called ``name`` is built and cached, one directory per checkout:
    torch writes the sources' paths into the build's ``build.ninja``, so two checkouts of one
    version sharing a directory rebuilt over each other at each load (minutes each)."""
    root = os.environ.get("TORCH_EXTENSIONS_DIR") or Path.home() / ".cache" / "torch_extensions"
    checkout = hashlib.sha256(str(_CSRC.resolve()).encode()).hexdigest()[:8]
    return Path(root) / "inference" / f"{name}-{checkout}"


@contextmanager
def _build_lock(directory: Path) -> Iterator[None]:
    """Hold the build of ``directory`` against every other process that builds or loads it.

    torch's own lock is a file (``lock``) that a builder killed mid-build leaves behind, and
    every later load then waits on it forever (a test run hung so). Every builder first takes
    this ``flock``, which the kernel drops with its process, so a ``lock`` file found while
    holding it was left by a dead one and is removed."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / "build.flock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        (directory / "lock").unlink(missing_ok=True)
        yield


def compiled_kernels():
    """The compiled extension module (``gathered_ffn``, ``input_matvec``, ``h_ffn``, ``gate_ffn``),
    or None."""
    if "module" in _state:
        return _state["module"]
    _state["module"] = None
    if os.environ.get(KERNELS_ENV, "1") == "0":
        return None
    try:
        from torch.utils.cpp_extension import load

        name = _build_name()
        directory = build_directory(name)
        with _build_lock(directory):
            module = load(
                name=name,
                sources=[str(source) for source in _SOURCES],
                extra_cflags=["-O3", "-march=native", "-fopenmp"],
                extra_ldflags=["-fopenmp"],
                build_directory=str(directory),
                verbose=False,
            )
        _state["module"] = module
    except Exception as exc:  # noqa: BLE001  (no compiler, headers, ninja...): fall back
        warnings.warn(f"compiled kernels not built ({exc}); using the PyTorch path", stacklevel=2)
    return _state["module"]


def compiled_gathered_ffn():
    """The kernel function ``(gu [F,2,D], down_t [F,D], x [D], idx [n]) -> out [D]``, or None."""
    module = compiled_kernels()
    return None if module is None else module.gathered_ffn


def bag_sum(rows: torch.Tensor, index: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``sum_i weights[i] * rows[index[i]]`` without gathering a matrix (CPU). -> [D]"""
    # One bag runs on one thread, so split the indices into one bag per thread.
    bags = max(1, min(torch.get_num_threads(), index.numel()))
    offsets = torch.arange(bags, dtype=torch.long) * index.numel() // bags
    summed = F.embedding_bag(index, rows, offsets, mode="sum", per_sample_weights=weights)
    return summed.sum(dim=0)


def is_silu(act_fn: nn.Module) -> bool:
    return isinstance(act_fn, nn.SiLU) or type(act_fn).__name__ == "SiLUActivation"


def gathered_ffn(
    gu: torch.Tensor,
    down_t: torch.Tensor,
    x1: torch.Tensor,
    active: torch.Tensor,
    act_fn: nn.Module,
    *,
    buffer: torch.Tensor,
    use_kernel: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``sum_i act(gate_i . x) * (up_i . x) * down_t[i]`` over neurons ``i`` in ``active``.

    ``gu: [F, 2, D]`` (gate and up rows of a neuron side by side), ``down_t: [F, D]``,
    ``x1: [D]``, ``active: [n]`` int64, all on one device. ``buffer`` is scratch space for the
    PyTorch path (reused across calls; pass an empty tensor at first). Returns the output ``[D]``
    and the buffer to pass next time. Reads ``3 * n * D`` weights.
    """
    n, d = active.numel(), gu.shape[-1]
    if n == 0:
        return x1.new_zeros(down_t.shape[1]), buffer
    on_cpu_fp32 = x1.device.type == "cpu" and gu.dtype == torch.float32
    kernel = compiled_gathered_ffn() if use_kernel and on_cpu_fp32 and is_silu(act_fn) else None
    if kernel is not None:
        return kernel(gu, down_t, x1.contiguous(), active), buffer
    if buffer.shape[0] < n:  # grow with headroom; reused by later tokens
        buffer = gu.new_empty(min(gu.shape[0], n + n // 4), 2, d)
    rows = torch.index_select(gu, 0, active, out=buffer[:n])  # [n, 2, D]
    pre = torch.mv(rows.view(2 * n, d), x1).view(n, 2)
    h = act_fn(pre[:, 0]) * pre[:, 1]  # [n]
    if x1.device.type == "cpu":
        return bag_sum(down_t, active, h), buffer
    return torch.mv(down_t.index_select(0, active).t(), h), buffer


def _cpu_fp32(*tensors: torch.Tensor) -> bool:
    return all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors)


def rows_matvec(rows: torch.Tensor, index: torch.Tensor, coef: torch.Tensor) -> torch.Tensor:
    """``sum_i coef[i] * rows[index[i]]`` reading only the indexed rows, with torch ops (the
    threshold kernels' path where the compiled one does not apply). ``rows: [R, C]``
    (contiguous), ``index: [n]`` int64, ``coef: [n]``. -> ``[C]``"""
    if index.numel() == 0:
        return rows.new_zeros(rows.shape[1])
    if rows.device.type == "cpu":
        return bag_sum(rows, index, coef)
    return coef @ rows.index_select(0, index)


def _ffn_kernels(use_kernel: bool, act_fn: nn.Module, *tensors: torch.Tensor):
    """The compiled module where it computes this FFN exactly (SiLU, fp32 on the CPU), else None."""
    return compiled_kernels() if use_kernel and is_silu(act_fn) and _cpu_fp32(*tensors) else None


def dense_linear(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``F.linear(x, weight)`` without a bias. One token (``x`` holds one row) in fp32 on the
    CPU, with ``weight`` row-major or a transposed contiguous view, runs the compiled dense GEMV
    (``dense_matvec``: faster than ATen's on the shipped model's small matrices, and the one the
    compiled decode step calls, so both decode paths give the same numbers)."""
    if x.shape[:-1].numel() == 1 and _cpu_fp32(x, weight) and weight.dim() == 2:
        module = compiled_kernels()
        if module is not None and (weight.is_contiguous() or weight.t().is_contiguous()):
            out = module.dense_matvec(weight, x.reshape(-1).contiguous())
            return out.view(*x.shape[:-1], weight.shape[0])
    return F.linear(x, weight)


def _kept_index(values: torch.Tensor, threshold: float) -> torch.Tensor:
    return (values.abs() >= threshold).nonzero().squeeze(1)  # [n] int64


def input_matvec(
    rows: torch.Tensor, x1: torch.Tensor, threshold: float, *, use_kernel: bool = True
) -> tuple[torch.Tensor, int]:
    """TEAL for one token: ``sum over |x1[i]| >= threshold of x1[i] * rows[i]``, reading only
    those rows. ``rows: [R, C]`` (``W.t()``, contiguous), ``x1: [R]``. -> (``[C]``, kept)"""
    if use_kernel and triton_kernels.supported(rows, x1):
        out, kept = triton_kernels.input_matvec(rows, x1, threshold)
        return out, int(kept)
    module = compiled_kernels() if use_kernel and _cpu_fp32(rows, x1) else None
    if module is not None:
        return module.input_matvec(rows, x1.contiguous(), float(threshold))
    index = _kept_index(x1, threshold)
    return rows_matvec(rows, index, x1[index]), index.numel()


def h_ffn(
    gate: torch.Tensor,
    up: torch.Tensor,
    down_t: torch.Tensor,
    x1: torch.Tensor,
    threshold: float,
    act_fn: nn.Module,
    *,
    use_kernel: bool = True,
) -> tuple[torch.Tensor, int]:
    """The ``h`` site for one token: ``h = act(gate x1) * (up x1)`` (gate and up read
    whole), then ``sum over |h_i| >= threshold of h_i * down_t[i]``. ``gate, up, down_t:
    [F, D]``, ``x1: [D]``. -> (``[D]``, kept neurons)"""
    if use_kernel and triton_kernels.supported(gate, up, down_t, x1):
        out, kept = triton_kernels.h_ffn(gate, up, down_t, x1, threshold, act_fn)
        return out, int(kept)
    module = _ffn_kernels(use_kernel, act_fn, gate, up, down_t, x1)
    if module is not None:
        return module.h_ffn(gate, up, down_t, x1.contiguous(), float(threshold))
    h = act_fn(F.linear(x1, gate)) * F.linear(x1, up)
    index = _kept_index(h, threshold)
    return rows_matvec(down_t, index, h[index]), index.numel()


def gate_ffn(
    gate: torch.Tensor,
    up: torch.Tensor,
    down_t: torch.Tensor,
    x1: torch.Tensor,
    threshold: float,
    act_fn: nn.Module,
    *,
    use_kernel: bool = True,
) -> tuple[torch.Tensor, int]:
    """CATS for one token: ``a = act(gate x1)`` (gate read whole), then ``sum over
    |a_i| >= threshold of a_i * (up_i . x1) * down_t[i]``, reading up and down rows of those
    neurons only. ``gate, up, down_t: [F, D]``, ``x1: [D]``. -> (``[D]``, kept neurons)"""
    if use_kernel and triton_kernels.supported(gate, up, down_t, x1):
        out, kept = triton_kernels.gate_ffn(gate, up, down_t, x1, threshold, act_fn)
        return out, int(kept)
    module = _ffn_kernels(use_kernel, act_fn, gate, up, down_t, x1)
    if module is not None:
        return module.gate_ffn(gate, up, down_t, x1.contiguous(), float(threshold))
    a = act_fn(F.linear(x1, gate))
    index = _kept_index(a, threshold)
    h = a[index] * torch.mv(up.index_select(0, index), x1)  # [n]: up rows of kept neurons only
    return rows_matvec(down_t, index, h), index.numel()
