"""Where and how a generation ran: the machine and engine facts that make two timings
comparable (host, CPU model, threads, GPU, torch version, weight format) and the decode path
the policy took (kernel path), and the process's resident memory now (the baseline a
generation's peak is measured against)."""

from __future__ import annotations

import functools
import platform
import socket
from pathlib import Path

import torch
from torch import nn

from inference.decoder import LeanDecoder, decoder_for
from inference.int8 import is_int8
from inference.quantized import block_formats


@functools.cache
def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_provenance(model: nn.Module, source_path: str) -> dict:
    """``host, cpu_model, threads, gpu_name, torch_version, weight_format`` of `model` in
    this process (``gpu_name`` "" on the CPU; ``weight_format``: the weights' dtype and the
    file they came from, e.g. ``torch.float32 from .gguf``, a GGUF's block formats kept as
    stored, ``Q4_1/Q8_0 blocks from .gguf``, or int8 projections, ``int8 projections with fp32
    scales, torch.bfloat16 elsewhere from a directory``)."""
    weight = next(model.parameters())
    device = weight.device
    blocks = block_formats(model)  # GGUF blocks as stored; the norms alone are fp32
    weights = f"{'/'.join(blocks)} blocks" if blocks else str(weight.dtype)
    if is_int8(model):  # the parameters left are embeddings, norms and head
        weights = f"int8 projections with fp32 scales, {weight.dtype} elsewhere"
    return {
        "host": socket.gethostname(),
        "cpu_model": cpu_model(),
        "threads": torch.get_num_threads(),
        "gpu_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "",
        "torch_version": torch.__version__,
        "weight_format": f"{weights} from {Path(source_path).suffix or 'a directory'}",
    }


def kernel_path(model: nn.Module) -> str:
    """The decode path a generation on `model` (as sparsified now) takes: the lean decoder's
    CUDA static step (Triton kernels), its compiled CPU step, its Python layer loop, or the
    Hugging Face forward. Builds the decoder for one position (a few milliseconds)."""
    decoder = decoder_for(model, 1)
    if not isinstance(decoder, LeanDecoder):
        return "transformers forward"
    if decoder.static is not None:
        return "lean decoder, static step (Triton)"
    return "lean decoder, compiled step" if decoder.compiled else "lean decoder, Python loop"


def resident_bytes() -> int | None:
    """The process's resident set now (VmRSS), or None where /proc is missing."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None
