"""Load the shipped GGUF model (or any local Hugging Face directory) into transformers.

Dequantizing the GGUF and converting its tokenizer takes ~30 s, so the converted model is saved
once with ``save_pretrained`` under ``<cache_dir>/<fingerprint>/`` and loaded from safetensors
afterwards. The fingerprint is a content hash of the weight files, so a cache entry can never be
served for different weights; the hash itself is memoised by (path, size, mtime) so it is computed
once per file. Fingerprints, the shipped model's path and what can be read without loading the
weights (context length, prompt tokens) live in the torch-free ``inference.model_info``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from inference.int8 import load_int8_checkpoint, write_int8_checkpoint
from inference.model_info import (
    CACHE_FORMAT,
    converted_entry_ready,
    default_model_path,
    fingerprint_directory,
    fingerprint_file,
)
from inference.quantized import FORMATS, load_gguf_quantized, quantize_model

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# "auto": a GGUF keeps its own block formats (inference.quantized), a directory the dtype its
# weights are stored in (bf16 stays bf16); "int8": the projections int8 with per-output scales,
# the rest bf16 (inference.int8: the GPU's 8-bit path).
LOAD_DTYPES = ("auto", *DTYPES, "int8")
QUANTIZE_FORMATS = tuple(FORMATS)  # --quantize / MODEL_QUANTIZE


@dataclass
class LoadedModel:
    """A model ready for decoding (eval mode); ``fingerprint`` identifies its weights."""

    model: PreTrainedModel
    tokenizer: object
    fingerprint: str
    path: str


def placed_dtype(dtype: str, *, device: str = "cpu", split: bool = False) -> str:
    """``dtype`` for a model placed on ``device`` (or ``split`` hot/cold by a plan): ``auto``
    keeps a GGUF's blocks only where their kernels run, the whole model on the CPU; elsewhere
    it means ``float32``."""
    if dtype == "auto" and (split or not device.startswith("cpu")):
        return "float32"
    return dtype


def default_cache_dir() -> Path:
    return Path.cwd() / "var" / "model-cache"


def load_model(
    path: str | Path | None = None,
    *,
    dtype: str = "float32",
    cache_dir: Path | None = None,
    quantize: str | None = None,
) -> LoadedModel:
    """Load a causal LM and its tokenizer.

    ``path``: a ``.gguf`` file or a local Hugging Face model directory (default: the shipped GGUF).
    ``dtype``: ``auto`` (a GGUF's weights stay in the file's block formats, never copied to
    fp32; a directory keeps the dtype it stores, e.g. bf16), or ``float32`` (the reference: a
    GGUF dequantized), ``bfloat16``, ``float16``, or ``int8`` (bf16 with every decoder
    projection int8 with per-output scales: for the GPU, where the Triton kernels read it; a
    CPU without ``TRITON_INTERPRET=1`` multiplies by the dequantized matrices). ``int8``
    quantizes the weights as stored once, tensor by tensor, into ``<cache_dir>/<fingerprint>.int8/``
    (``int8.write_int8_checkpoint``; a directory's too) and reads that afterwards, so no float
    copy of the model is ever held.
    ``cache_dir``: root of the converted-GGUF cache (default ``./var/model-cache``); each model
    lives in ``<cache_dir>/<fingerprint>/``. Directories are loaded directly, never cached.
    ``quantize``: a block format (``QUANTIZE_FORMATS``, with ``dtype="auto"``): a directory's
    matrices are quantized at load by ``gguf.quants`` (``quantized.quantize_model``); a GGUF's
    matrices in a format without kernels (Q4_K, Q6_K, F16, ...) are converted to it, the rest
    kept as stored. The fingerprint then ends in ``.<format>``: other weights, another identity.
    """
    if dtype not in LOAD_DTYPES:
        raise ValueError(f"dtype must be one of {sorted(LOAD_DTYPES)}, got {dtype!r}")
    if quantize is not None and quantize not in QUANTIZE_FORMATS:
        raise ValueError(f"quantize must be one of {list(QUANTIZE_FORMATS)}, got {quantize!r}")
    if quantize is not None and dtype != "auto":
        raise ValueError(f"quantizing keeps the weights as blocks: use dtype auto, not {dtype}")
    path = Path(path) if path is not None else default_model_path()
    path = path.expanduser().resolve()
    if not path.exists():
        raise FileNotFoundError(f"no model at {path}")
    cache_root = Path(cache_dir) if cache_dir is not None else default_cache_dir()

    if path.is_dir():
        fingerprint = fingerprint_directory(path, cache_root)
        source = path
    elif path.suffix == ".gguf":
        fingerprint = fingerprint_file(path, cache_root)
        if dtype == "auto":
            tokenizer_entry = cache_root / f"{fingerprint}.tokenizer"
            return _stored_gguf(path, tokenizer_entry, fingerprint, quantize)
        source = _converted_gguf(path, cache_root / fingerprint)
    else:
        raise ValueError(f"{path} is neither a .gguf file nor a model directory")

    tokenizer = AutoTokenizer.from_pretrained(source)
    if dtype == "int8":
        model = load_int8_checkpoint(_int8_entry(source, cache_root / f"{fingerprint}.int8"))
    else:
        torch_dtype = "auto" if dtype == "auto" else DTYPES.get(dtype, torch.float32)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype)
        if quantize is not None:
            quantize_model(model, quantize)
            fingerprint = f"{fingerprint}.{quantize}"
        model.eval()
    return LoadedModel(model=model, tokenizer=tokenizer, fingerprint=fingerprint, path=str(path))


def _stored_gguf(
    gguf: Path, tokenizer_entry: Path, fingerprint: str, convert: str | None
) -> LoadedModel:
    """``gguf`` with its weights as stored (``inference.quantized``; ``convert``: the format
    its matrices without kernels become); its tokenizer converted once and cached in
    ``tokenizer_entry`` (the weights are read from the file every time)."""
    config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if not (tokenizer_entry / "tokenizer_config.json").is_file():
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        _write_entry(tokenizer_entry, tokenizer.save_pretrained, "tokenizer_config.json")
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_entry)
    model = load_gguf_quantized(gguf, config, convert)
    if convert is not None:
        fingerprint = f"{fingerprint}.{convert}"
    return LoadedModel(model=model, tokenizer=tokenizer, fingerprint=fingerprint, path=str(gguf))


def _int8_entry(source: Path, entry: Path) -> Path:
    """``entry``, holding ``source``'s int8 checkpoint (written on the first call)."""
    if not (entry / "config.json").is_file():
        _write_entry(entry, lambda tmp: write_int8_checkpoint(source, tmp), "config.json")
    return entry


def _write_entry(entry: Path, save, marker_name: str) -> None:
    """``save(directory)`` into a sibling temp dir renamed to ``entry``, so a concurrent reader
    never sees half an entry (a concurrent writer's complete entry wins)."""
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}-", dir=entry.parent))
    try:
        tmp.chmod(0o755)
        save(tmp)
        if not (entry / marker_name).is_file():
            if entry.exists():
                shutil.rmtree(entry)
            os.replace(tmp, entry)
    except OSError:
        if not (entry / marker_name).is_file():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _converted_gguf(gguf: Path, entry: Path) -> Path:
    """Return a directory holding ``gguf`` converted by transformers, creating it if needed."""
    marker = entry / "converted.json"
    if converted_entry_ready(entry):
        return entry
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    _forget_gguf_quantizer(model)
    entry.parent.mkdir(parents=True, exist_ok=True)
    # Write into a sibling temp dir and rename, so a concurrent reader never sees half a cache.
    tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}-", dir=entry.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private; workers may run as another user
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "converted.json").write_text(
            json.dumps({"format": CACHE_FORMAT, "source": str(gguf)}, indent=1)
        )
        if not marker.is_file():  # else a concurrent process finished first: keep its entry
            if entry.exists():  # an entry from an older cache format
                shutil.rmtree(entry)
            os.replace(tmp, entry)
    except OSError:
        if not marker.is_file():  # renaming onto a concurrent writer's complete entry is fine
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return entry


def _forget_gguf_quantizer(model: PreTrainedModel) -> None:
    """Make a dequantized GGUF model saveable as a plain float checkpoint.

    Without the optional ``kernels`` package transformers unpacks every GGUF tensor into a
    float ``nn.Linear``/``nn.Embedding`` but still refuses ``save_pretrained``; with it, weights
    could stay packed, which this cache cannot store, so that case fails loudly here.
    """
    for name, module in model.named_modules():
        if "gguf" in type(module).__name__.lower():
            raise RuntimeError(
                f"{name} is a packed {type(module).__name__}; cannot cache it as floats"
            )
    for name, param in model.named_parameters():
        if not param.dtype.is_floating_point:
            raise RuntimeError(
                f"{name} has dtype {param.dtype}; expected dequantized float weights"
            )
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
