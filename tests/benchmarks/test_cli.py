"""The benchmarks' command (``python -m benchmarks``): parsing and the JSON shapes."""

import json

import pytest

from benchmarks.__main__ import build_parser, main


def test_bench_parsing():
    args = build_parser().parse_args(
        ["ffn", "--shape", "llama-70b", "--active", "0.5,0.3,0.1", "--json"]
    )
    assert (args.what, args.shape, args.active, args.json) == (
        "ffn",
        "llama-70b",
        "0.5,0.3,0.1",
        True,
    )
    assert build_parser().parse_args(["decode", "--json"]).what == "decode"


def test_bench_ffn_json_shape(capsys):
    assert (
        main(["ffn", "--shape", "tiny", "--active", "0.5,0.1", "--reps", "2", "--json"])
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert out["shape"] == "tiny" and out["read_bandwidth_bytes_per_s"] > 0
    assert [p["active_fraction"] for p in out["points"]] == [0.5, 0.1]
    for p in out["points"]:
        assert p["ideal_ratio"] == pytest.approx(1 / p["active_fraction"], rel=0.1)
        assert {"sparse_ms", "speedup", "fraction_of_ideal", "fraction_of_bandwidth"} <= set(p)
    assert out["dense_ms"] > 0


@pytest.mark.model
def test_bench_decode_json_shape(capsys):
    assert main(["decode", "--max-new-tokens", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["transformers_dense_tokens_per_s"] > 0
    assert {"dense", "static", "dynamic", "budget"} <= set(out["policies"])
    assert out["policies"]["dense"]["token_agreement_with_dense"] == 1.0


def test_bench_quality_on_tiny(tiny_dir, tmp_path, capsys):
    argv = ["quality", "--model", str(tiny_dir), "--cache-dir", str(tmp_path)]
    policy = '{"kind": "static", "threshold": 0.3}'
    assert main([*argv, "--count", "2", "--policy", policy, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    dense, static = out["policies"]["dense"], out["policies"]["static t=0.3"]
    assert dense["top1_agreement_with_dense"] == 1.0 and dense["kl_from_dense_nats"] == 0.0
    assert dense["active_fraction"] == 1.0 and static["active_fraction"] < 1.0
    assert static["kl_from_dense_nats"] > 0.0 and out["reply_tokens"] > 0
    with pytest.raises(SystemExit):
        main([*argv, "--policy", '{"kind": "budget", "target_active_fraction": 0.5}'])
    assert "changes per decode step" in capsys.readouterr().err


def test_bench_e2e_json_contract(capsys):
    argv = ["e2e", "--shape", "tiny", "--sparsity", "0.5", "--tokens", "4"]
    assert main([*argv, "--rounds", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["dense"]) >= {"tokens_per_s", "weight_bytes_read_per_token"}
    assert [p["site"] for p in out["policies"]] == ["h", "gate", "input"]
    for p in out["policies"]:
        assert set(p) >= {
            "site", "achieved_sparsity", "tokens_per_s", "weight_bytes_read_per_token", "speedup"
        }
        assert p["speedup"] == pytest.approx(p["tokens_per_s"] / out["dense"]["tokens_per_s"])
        assert p["weight_bytes_read_per_token"] < out["dense"]["weight_bytes_read_per_token"]
        assert 0.2 < p["achieved_sparsity"] < 0.8, f"{p['site']}: calibration missed 50 %"
