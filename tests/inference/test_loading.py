import json
import os

import pytest
import torch

from inference.__main__ import main
from inference.generate import generate
from inference.loading import default_model_path, fingerprint_file, load_model
from inference.policies import SITES, DensePolicy, StaticPolicy
from inference.quantized import block_formats, stored_reference
from tests.inference.conftest import tiny_model, tiny_tokenizer


def test_default_model_path_is_the_shipped_gguf():
    path = default_model_path()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert path.is_file()


def test_loads_local_hf_directory(tiny_dir, tmp_path):
    loaded = load_model(tiny_dir, cache_dir=tmp_path / "cache")
    assert not loaded.model.training
    assert loaded.path == str(tiny_dir)
    assert loaded.fingerprint.startswith("tiny-llama-")
    again = load_model(tiny_dir, cache_dir=tmp_path / "cache")
    assert again.fingerprint == loaded.fingerprint
    ids = torch.tensor([[1, 7, 8]])
    torch.testing.assert_close(again.model(ids).logits, tiny_model()(ids).logits)
    result = generate(loaded, "w1 w2", StaticPolicy(0.0), max_new_tokens=3)
    assert result.new_tokens >= 1


def test_dtype_is_applied_and_checked(tiny_dir, tmp_path):
    assert load_model(tiny_dir, dtype="bfloat16", cache_dir=tmp_path).model.dtype == torch.bfloat16
    with pytest.raises(ValueError, match="dtype"):
        load_model(tiny_dir, dtype="int4", cache_dir=tmp_path)


def test_auto_keeps_a_directory_in_the_dtype_it_stores(tiny_dir, tmp_path):
    assert load_model(tiny_dir, dtype="auto", cache_dir=tmp_path).model.dtype == torch.float32
    bf16_dir = tmp_path / "tiny-bf16"
    tiny_model().to(torch.bfloat16).save_pretrained(bf16_dir)
    tiny_tokenizer().save_pretrained(bf16_dir)
    loaded = load_model(bf16_dir, dtype="auto", cache_dir=tmp_path / "cache")
    assert {p.dtype for p in loaded.model.parameters()} == {torch.bfloat16}
    dense = generate(loaded, "w1 w2 w3", DensePolicy(), max_new_tokens=4)
    for site in SITES:  # every site decodes on bf16 weights (the PyTorch paths)
        zero = generate(loaded, "w1 w2 w3", StaticPolicy(0.0, site=site), max_new_tokens=4)
        assert zero.text == dense.text
        sparse = generate(loaded, "w1 w2 w3", StaticPolicy(0.05, site=site), max_new_tokens=4)
        assert 0.0 < sparse.achieved_sparsity < 1.0


def test_quantize_a_directory_at_load(tiny_dir, tmp_path):
    plain = load_model(tiny_dir, cache_dir=tmp_path)
    loaded = load_model(tiny_dir, dtype="auto", quantize="q8_0", cache_dir=tmp_path)
    assert block_formats(loaded.model) == ["Q8_0"]
    assert loaded.fingerprint == f"{plain.fingerprint}.q8_0"  # other weights, other identity
    ids = torch.tensor([[1, 7, 8]])
    with torch.no_grad():
        reference = stored_reference(tiny_model(), "q8_0")(ids).logits
        torch.testing.assert_close(loaded.model(ids).logits, reference)
    with pytest.raises(ValueError, match="dtype auto"):
        load_model(tiny_dir, dtype="float32", quantize="q8_0", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="quantize must be one of"):
        load_model(tiny_dir, dtype="auto", quantize="q2_k", cache_dir=tmp_path)


def test_missing_or_unknown_paths(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "nope")
    other = tmp_path / "weights.txt"
    other.write_text("x")
    with pytest.raises(ValueError, match="neither"):
        load_model(other, cache_dir=tmp_path)


def test_fingerprint_follows_content_and_is_memoised(tmp_path):
    weights = tmp_path / "m.gguf"
    weights.write_bytes(b"a" * 100)
    cache = tmp_path / "cache"
    first = fingerprint_file(weights, cache)
    assert first == fingerprint_file(weights, cache)
    assert len(json.loads((cache / "hashes.json").read_text())) == 1
    weights.write_bytes(b"b" * 100)
    os.utime(weights, ns=(1, 1))  # a new mtime, as any rewrite gives
    second = fingerprint_file(weights, cache)
    assert second != first and second.startswith("m-")


def test_cli_generate_json(tiny_dir, tmp_path, capsys):
    code = main(
        [
            "generate",
            "--prompt",
            "w1 w2",
            "--model",
            str(tiny_dir),
            "--cache-dir",
            str(tmp_path),
            "--policy",
            '{"kind": "static", "threshold": 0.2}',
            "--max-new-tokens",
            "4",
            "--json",
        ]
    )
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["policy"] == {"kind": "static", "threshold": 0.2}
    assert isinstance(out["text"], str) and "text" not in out["telemetry"]
    assert 1 <= out["telemetry"]["new_tokens"] <= 4
    assert out["telemetry"]["active_fraction"] < 1.0


def test_cli_bad_policy_is_a_message_not_a_traceback(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", "--prompt", "x", "--policy", '{"kind": "static"}'])
    assert exit_info.value.code == 2
    assert "policy 'static' needs 'threshold'" in capsys.readouterr().err


def test_complete_cache_entry_is_reused_without_converting(tmp_path, monkeypatch):
    from inference import loading, model_info

    entry = tmp_path / "cache" / "m-abc"
    entry.mkdir(parents=True)
    (entry / "converted.json").write_text(json.dumps({"format": model_info.CACHE_FORMAT}))

    def convert(*args, **kwargs):
        raise AssertionError("converted again")

    monkeypatch.setattr(loading.AutoTokenizer, "from_pretrained", convert)
    assert loading._converted_gguf(tmp_path / "m.gguf", entry) == entry
    (entry / "converted.json").write_text(json.dumps({"format": -1}))  # older layout: redo
    with pytest.raises(AssertionError, match="converted again"):
        loading._converted_gguf(tmp_path / "m.gguf", entry)
