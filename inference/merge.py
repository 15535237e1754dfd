"""Alignment vectors (arXiv 2410.19206): theta = theta_base + lam * (theta_aligned - theta_base).

``merge(base, aligned, lam, cache_dir=...)`` builds the merged weights of two models of the same
architecture once and saves them as a Hugging Face directory under
``<cache_dir>/merged-<key>/``, where the key hashes the two models' content fingerprints and
``lam``: an entry can never be served for other weights, and a later call (any process) loads
it like any model directory. Any threshold policy then composes with it as with any model
(``load_model(merged.path)``, then sparsify as usual).

Each tensor is ``torch.lerp(base, aligned, lam)`` in float32, cast back to the aligned model's
dtype: lerp is exact at both ends, so lam=0 gives the base and lam=1 the aligned model bit for
bit (``base + 1 * (aligned - base)`` would not). Any finite lam is allowed (lam > 1 extrapolates
past the aligned model, as the paper sweeps). The tokenizer and chat template are the aligned
model's, so every lam in a sweep is prompted the same way. Building holds both models in memory
at once (float32).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from inference.loading import default_cache_dir, load_model
from inference.model_info import SHAPE_FIELDS, ModelPathError, describe

MERGE_FORMAT = 1  # bump when the layout of a merged cache entry changes
# Config fields besides the shapes that must agree: a different value changes what a weight means.
_SAME_CONFIG = ("model_type", *SHAPE_FIELDS, "head_dim", "tie_word_embeddings", "rope_theta")


class MergeMismatch(ModelPathError):
    """Two models that cannot be merged; the message names the first field or tensor differing."""


@dataclass(frozen=True)
class Merged:
    """A merged model's directory and identity; ``built`` is False when it came from the cache."""

    path: Path
    base_fingerprint: str
    aligned_fingerprint: str
    lam: float
    built: bool


def merge(
    base: str | Path, aligned: str | Path, lam: float, *, cache_dir: Path | None = None
) -> Merged:
    """The directory of theta_base + lam * (theta_aligned - theta_base), built if not cached.

    ``base``/``aligned``: a Hugging Face directory or a ``.gguf`` (converted through the usual
    cache). Raises ``MergeMismatch`` when the two differ in architecture or in any tensor's
    name or shape, ``ModelPathError`` when either cannot be read, ``ValueError`` for a lam that
    is not a finite number."""
    lam = float(lam)
    if not math.isfinite(lam):
        raise ValueError(f"lam must be a finite number, got {lam!r}")
    cache_root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    base_info = describe(base, cache_root=cache_root)
    aligned_info = describe(aligned, cache_root=cache_root)
    key = hashlib.sha256(
        json.dumps(
            [MERGE_FORMAT, base_info.fingerprint, aligned_info.fingerprint, lam.hex()]
        ).encode()
    ).hexdigest()[:16]
    entry = cache_root / f"merged-{key}"
    result = Merged(entry, base_info.fingerprint, aligned_info.fingerprint, lam, built=False)
    if _entry_ready(entry, result):
        return result

    base_model = load_model(base_info.path, dtype="float32", cache_dir=cache_root)
    aligned_model = load_model(aligned_info.path, dtype="float32", cache_dir=cache_root)
    check_mergeable(base_model.model, aligned_model.model)
    merge_into(aligned_model.model, base_model.model, lam)
    del base_model
    _write_entry(entry, aligned_model, result)
    return Merged(entry, base_info.fingerprint, aligned_info.fingerprint, lam, built=True)


def check_mergeable(base: torch.nn.Module, aligned: torch.nn.Module) -> None:
    """Raise ``MergeMismatch`` naming the first config field or tensor where the two differ."""
    for field in _SAME_CONFIG:
        a, b = getattr(base.config, field, None), getattr(aligned.config, field, None)
        if a != b:
            raise MergeMismatch(f"base and aligned models differ in config {field}: {a!r} vs {b!r}")
    base_state, aligned_state = base.state_dict(), aligned.state_dict()
    for name in sorted(base_state.keys() | aligned_state.keys()):
        if name not in aligned_state or name not in base_state:
            which = "aligned" if name not in aligned_state else "base"
            raise MergeMismatch(f"tensor {name} is missing from the {which} model")
        a, b = tuple(base_state[name].shape), tuple(aligned_state[name].shape)
        if a != b:
            raise MergeMismatch(
                f"tensor {name} has shape {a} in the base model, {b} in the aligned"
            )


@torch.no_grad()
def merge_into(aligned: torch.nn.Module, base: torch.nn.Module, lam: float) -> None:
    """Overwrite ``aligned``'s parameters with lerp(base, aligned, lam), tensor by tensor."""
    base_params = dict(base.named_parameters())
    for name, param in aligned.named_parameters():  # tied weights appear once here
        merged = torch.lerp(base_params[name].float(), param.float(), lam)
        param.copy_(merged.to(param.dtype))


def _entry_ready(entry: Path, merged: Merged) -> bool:
    try:
        marker = json.loads((entry / "merged.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return False
    return marker == _marker(merged)


def _marker(merged: Merged) -> dict:
    return {
        "format": MERGE_FORMAT,
        "base": merged.base_fingerprint,
        "aligned": merged.aligned_fingerprint,
        "lam": merged.lam,
    }


def _write_entry(entry: Path, loaded, merged: Merged) -> None:
    """Save into a sibling temp dir and rename, so a concurrent reader never sees half an entry
    (the same protocol as the converted-GGUF cache in ``inference.loading``)."""
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}-", dir=entry.parent))
    try:
        tmp.chmod(0o755)
        loaded.model.save_pretrained(tmp)
        loaded.tokenizer.save_pretrained(tmp)
        (tmp / "merged.json").write_text(json.dumps(_marker(merged), indent=1))
        if not _entry_ready(entry, merged):  # else a concurrent process finished first
            if entry.exists():  # a stale or older-format entry
                shutil.rmtree(entry)
            os.replace(tmp, entry)
    except OSError:
        if not _entry_ready(entry, merged):
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
