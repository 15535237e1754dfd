"""What is read about a model without its weights: context length and prompt sizes."""

import json
import subprocess
import sys

import pytest

from inference.generate import prompt_ids
from inference.model_info import (
    CACHE_FORMAT,
    ModelPathError,
    PromptSize,
    context_length,
    context_overflow,
    default_model_path,
    describe,
    fingerprint_directory,
    fingerprint_file,
    prompt_sizes,
)
from tests.inference.conftest import tiny_tokenizer


def test_context_length_of_the_shipped_gguf_and_of_a_directory(tiny_dir):
    assert context_length(default_model_path()) == 8192
    assert context_length(tiny_dir) == 256
    config = json.loads((tiny_dir / "config.json").read_text())
    config["max_position_embeddings"] = 64
    (tiny_dir / "config.json").write_text(json.dumps(config))
    assert context_length(tiny_dir) == 64  # memoised by mtime: a rewrite is read again


def test_a_directory_counts_exactly_as_the_engine_does(tiny_dir, tmp_path):
    prompts = ["w1 w2 w3", " ".join(["w7"] * 300)]
    sizes = prompt_sizes(prompts, path=tiny_dir, cache_root=tmp_path)
    assert [s.tokens for s in sizes] == [prompt_ids(tiny_tokenizer(), p).shape[1] for p in prompts]
    assert all(s.exact for s in sizes)


def test_a_converted_gguf_counts_with_the_tokenizer_its_cache_entry_holds(tmp_path):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"not read: the cache entry answers")
    cache = tmp_path / "cache"
    entry = cache / fingerprint_file(gguf, cache)
    tiny_tokenizer().save_pretrained(entry)
    (entry / "converted.json").write_text(json.dumps({"format": CACHE_FORMAT}))
    (size,) = prompt_sizes(["w1 w2 w3"], path=gguf, cache_root=cache)
    assert size == PromptSize(
        tokens=prompt_ids(tiny_tokenizer(), "w1 w2 w3").shape[1], characters=8
    )


def test_an_unconverted_gguf_gives_a_lower_bound_that_refuses_a_huge_prompt(tmp_path):
    # No converted tokenizer in an empty cache: characters / the longest token (81 for SmolLM2).
    huge, short = prompt_sizes(
        ["x" * 960_000, "hello"], path=default_model_path(), cache_root=tmp_path
    )
    assert (huge.tokens, huge.exact, huge.longest_token_chars) == (11852, False, 81)
    assert short.tokens == 1
    assert context_overflow(huge, max_new_tokens=128, context=8192) == (
        "the prompt is too long for the model: at least 11852 prompt tokens (960000 characters, "
        "none of the model's tokens covers more than 81) + 128 new tokens (max_new_tokens) = "
        "11980 > 8192, the model's context length"
    )
    assert context_overflow(short, max_new_tokens=128, context=8192) is None


def test_the_rule_counts_prompt_and_reply():
    assert context_overflow(PromptSize(100, 0), max_new_tokens=156, context=256) is None
    assert "= 257 > 256" in context_overflow(PromptSize(101, 0), max_new_tokens=156, context=256)


def test_reading_sizes_loads_no_torch(tiny_dir, tmp_path):
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from inference.model_info import context_length, default_model_path, prompt_sizes\n"
        f"prompt_sizes(['w1 w2'], path={str(tiny_dir)!r}, cache_root=Path({str(tmp_path)!r}))\n"
        "context_length(default_model_path())\n"
        "print('torch' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert result.stdout.strip() == "False"


def test_describe_a_directory_and_the_shipped_gguf(tiny_dir, tmp_path):
    info = describe(tiny_dir, cache_root=tmp_path)
    assert (info.kind, info.architecture, info.context_length) == ("hf-directory", "llama", 256)
    assert info.shape == {
        "vocab_size": 64,
        "hidden_size": 32,
        "intermediate_size": 96,
        "num_hidden_layers": 3,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
    }
    assert info.weight_formats == ("F32",)
    assert info.tensors["model.layers.0.mlp.down_proj.weight"] == (32, 96)
    assert info.fingerprint == fingerprint_directory(tiny_dir, tmp_path)

    shipped = describe(default_model_path(), cache_root=tmp_path)
    assert (shipped.kind, shipped.architecture, shipped.context_length) == ("gguf", "llama", 8192)
    assert shipped.shape["hidden_size"] == 576 and shipped.shape["vocab_size"] == 49152
    assert "Q4_1" in shipped.weight_formats
    assert 134_000_000 < shipped.parameters < 135_000_000  # SmolLM2-135M, tied embeddings
    assert shipped.fingerprint == fingerprint_file(default_model_path(), tmp_path)


def test_describe_refuses_what_cannot_be_loaded(tiny_dir, tmp_path):
    with pytest.raises(ModelPathError, match="no model at"):
        describe(tmp_path / "missing", cache_root=tmp_path)
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(ModelPathError, match="neither a .gguf"):
        describe(tmp_path / "notes.txt", cache_root=tmp_path)
    (tmp_path / "broken.gguf").write_bytes(b"not a gguf")
    with pytest.raises(ModelPathError, match="cannot read"):
        describe(tmp_path / "broken.gguf", cache_root=tmp_path)
    config = json.loads((tiny_dir / "config.json").read_text())
    (tiny_dir / "config.json").write_text(json.dumps(config | {"model_type": "gpt2"}))
    with pytest.raises(ModelPathError, match="'gpt2' model; the engine decodes the LLaMA"):
        describe(tiny_dir, cache_root=tmp_path)
    (tiny_dir / "config.json").unlink()
    with pytest.raises(ModelPathError, match="no config.json"):
        describe(tiny_dir, cache_root=tmp_path)
