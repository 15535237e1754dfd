"""CLI contracts of issue 4: argument parsing and the JSON shapes (tiny model; fast)."""

import json

import pytest
import torch

from inference.__main__ import build_parser, main
from inference.policies import StaticPolicy
from tests.inference.conftest import tiny_model, tiny_tokenizer


@pytest.fixture
def tiny_dir(tmp_path):
    path = tmp_path / "tiny-llama"
    tiny_model().save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    return path


def test_generate_parses_positional_prompt_and_policy_file(tmp_path):
    policy_file = tmp_path / "policy.json"
    policy_file.write_text('{"kind": "static", "threshold": 0.1}')
    args = build_parser().parse_args(
        ["generate", "--policy", str(policy_file), "--max-new-tokens", "3", "--json", "hi there"]
    )
    assert args.prompt == "hi there" and args.policy == StaticPolicy(0.1)
    assert args.max_new_tokens == 3 and args.json
    inline = build_parser().parse_args(["generate", "--policy", '{"kind":"dense"}', "x"])
    assert inline.policy.kind == "dense"
    alias = build_parser().parse_args(["generate", "--prompt", "as option"])
    assert alias.prompt is None and alias.prompt_option == "as option"


def test_generate_policy_neither_file_nor_json_is_a_message(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["generate", "--policy", "no-such-file.json", "x"])
    assert "neither a policy file nor inline JSON" in capsys.readouterr().err


def test_generate_without_prompt_is_an_error(tiny_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", "--model", str(tiny_dir), "--cache-dir", str(tmp_path)])
    assert exit_info.value.code == 2 and "prompt is needed" in capsys.readouterr().err


def test_generate_json_has_text_and_telemetry(tiny_dir, tmp_path, capsys):
    policy_file = tmp_path / "p.json"
    policy_file.write_text('{"kind": "budget", "target_active_fraction": 0.5, "threshold": 0.2}')
    argv = ["generate", "--model", str(tiny_dir), "--cache-dir", str(tmp_path)]
    assert main([*argv, "--policy", str(policy_file), "--max-new-tokens", "5", "--json", "w1"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) >= {"text", "telemetry"}
    telemetry = out["telemetry"]
    for key in ("new_tokens", "latency_s", "tokens_per_s", "ttft_s", "peak_rss_bytes"):
        assert key in telemetry
    assert telemetry["achieved_sparsity"] == pytest.approx(1 - telemetry["active_fraction"])
    assert 0 < telemetry["ttft_s"] <= telemetry["latency_s"]
    assert telemetry["cuda_peak_bytes"] == 0 and telemetry["device"] == "cpu"


def test_generate_streams_text(tiny_dir, tmp_path, capsys):
    argv = ["generate", "--model", str(tiny_dir), "--cache-dir", str(tmp_path)]
    assert main([*argv, "--max-new-tokens", "6", "w1 w2"]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip()  # the reply, written piece by piece
    assert "new tokens" in captured.err


def test_generate_with_a_plan_splits_hot_and_cold(tiny_dir, tmp_path, capsys):
    plan_file = tmp_path / "plan.json"
    # The tiny shape's dense parts take ~92 KiB in f32; 250 KiB more holds 2 layers' neurons.
    assert main(["plan", "--shape", "tiny", "--weight-format", "f32", "--gpu-mem", "300KiB",
                 "--out", str(plan_file)]) == 0  # fmt: skip
    assert "saved" in capsys.readouterr().out
    argv = ["generate", "--model", str(tiny_dir), "--cache-dir", str(tmp_path), "--json"]
    policy = '{"kind": "static", "threshold": 0.2}'
    assert main([*argv, "--policy", policy, "--max-new-tokens", "4", "w1 w2"]) == 0
    plain = json.loads(capsys.readouterr().out)
    split = [*argv, "--plan", str(plan_file), "--hot-device", "cpu", "--cold-device", "cpu"]
    assert main([*split, "--policy", policy, "--max-new-tokens", "4", "w1 w2"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["text"] == plain["text"]
    assert 0.0 < out["telemetry"]["hot_activation_share"] < 1.0
    assert list(out["telemetry"]["weight_bytes_per_device"]) == ["cpu"]


def test_generate_device_flags_are_checked(tiny_dir, tmp_path, capsys):
    argv = ["generate", "--model", str(tiny_dir), "--cache-dir", str(tmp_path)]
    with pytest.raises(SystemExit):
        main([*argv, "--hot-device", "cuda", "w1"])
    assert "need --plan or --hot-fraction" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*argv, "--plan", str(tmp_path / "none.json"), "--device", "cuda", "w1"])
    assert "--hot-device/--cold-device" in capsys.readouterr().err


def test_bench_parsing():
    args = build_parser().parse_args(
        ["bench", "ffn", "--shape", "llama-70b", "--active", "0.5,0.3,0.1", "--json"]
    )
    assert (args.what, args.shape, args.active, args.json) == (
        "ffn",
        "llama-70b",
        "0.5,0.3,0.1",
        True,
    )
    assert build_parser().parse_args(["bench", "decode", "--json"]).what == "decode"


def test_bench_ffn_json_shape(capsys):
    assert (
        main(["bench", "ffn", "--shape", "tiny", "--active", "0.5,0.1", "--reps", "2", "--json"])
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
    assert main(["bench", "decode", "--max-new-tokens", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["transformers_dense_tokens_per_s"] > 0
    assert {"dense", "static", "dynamic", "budget"} <= set(out["policies"])
    assert out["policies"]["dense"]["token_agreement_with_dense"] == 1.0


def test_calibrate_predictor_prints_a_recall_policy(tmp_path, capsys):
    from inference.predictor import Predictors

    path = tmp_path / "pred.safetensors"
    w = [[torch.zeros(1) for _ in range(3)] for _ in range(4)]
    Predictors("tiny", 0.05, *w, {
        "thresholds_for_recall": {"0.95": [0.1, 0.2, 0.3]},
        "mean_predicted_active_for_recall": {"0.95": 0.8},
    }).save(path)  # fmt: skip
    assert main(["calibrate", "--predictor", str(path), "--target-recall", "0.95"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["thresholds"] == [0.1, 0.2, 0.3]
    assert "sparsity 20.0%" in captured.err
    with pytest.raises(SystemExit):
        main(["calibrate", "--predictor", str(path)])
    assert "--target-recall" in capsys.readouterr().err


def test_bench_quality_on_tiny(tiny_dir, tmp_path, capsys):
    argv = ["bench", "quality", "--model", str(tiny_dir), "--cache-dir", str(tmp_path)]
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
