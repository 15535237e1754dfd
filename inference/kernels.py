"""The compiled CPU kernel of the gathered FFN (``csrc/gathered_ffn.cpp``), built on first use.

``torch.utils.cpp_extension.load`` compiles the project's own C++ file with the system compiler
(~40 s once; cached under ``~/.cache/torch_extensions``). Where it cannot be built (no compiler),
or with ``INFERENCE_GATHER_KERNEL=0``, ``gathered_ffn()`` returns ``None`` and callers use the
pure-PyTorch path (``index_select`` into a buffer + ``embedding_bag``), which gives the same
numbers more slowly.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

_SOURCE = Path(__file__).parent / "csrc" / "gathered_ffn.cpp"
_state: dict = {}


def gathered_ffn():
    """The kernel function ``(gu [F,2,D], down_t [F,D], x [D], idx [n]) -> out [D]``, or None."""
    if "fn" in _state:
        return _state["fn"]
    _state["fn"] = None
    if os.environ.get("INFERENCE_GATHER_KERNEL", "1") == "0":
        return None
    try:
        from torch.utils.cpp_extension import load

        module = load(
            name="inference_gathered_ffn",
            sources=[str(_SOURCE)],
            extra_cflags=["-O3", "-march=native", "-fopenmp"],
            extra_ldflags=["-fopenmp"],
            verbose=False,
        )
        _state["fn"] = module.gathered_ffn
    except Exception as exc:  # noqa: BLE001  (no compiler, headers, ninja...): fall back
        warnings.warn(
            f"gathered FFN kernel not built ({exc}); using the PyTorch path", stacklevel=2
        )
    return _state["fn"]
