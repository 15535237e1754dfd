"""CLI contracts of issue 4: argument parsing and the JSON shapes (tiny model; fast)."""

import json

import pytest
import torch

from inference.__main__ import build_parser, main
from inference.policies import StaticPolicy


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


def test_generate_quantizes_a_directory_at_load(tiny_dir, tmp_path, capsys, monkeypatch):
    argv = ["generate", "--model", str(tiny_dir), "--cache-dir", str(tmp_path), "--json"]
    assert main([*argv, "--max-new-tokens", "3", "w1 w2"]) == 0
    plain = json.loads(capsys.readouterr().out)["telemetry"]
    monkeypatch.setenv("MODEL_QUANTIZE", "q4_0")  # the flag's default
    assert main([*argv, "--max-new-tokens", "3", "w1 w2"]) == 0
    blocks = json.loads(capsys.readouterr().out)["telemetry"]
    ratio = blocks["dense_weight_bytes_per_token"] / plain["dense_weight_bytes_per_token"]
    assert ratio == pytest.approx(18 / 32 / 4)  # a Q4_0 block: 18 bytes a 32 weights, not 4 each
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--quantize", "q8_0", "--dtype", "float32", "w1"])
    assert exit_info.value.code == 2
    assert "dtype auto" in capsys.readouterr().err


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


def test_model_info_prints_json_and_refuses_a_missing_path(tiny_dir, tmp_path, capsys):
    assert main(["model-info", str(tiny_dir), "--json", "--cache-dir", str(tmp_path)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["architecture"] == "llama" and info["fingerprint"].startswith("tiny-llama-")
    with pytest.raises(SystemExit) as exit_info:
        main(["model-info", str(tmp_path / "missing"), "--cache-dir", str(tmp_path)])
    assert exit_info.value.code == 2 and "error: no model at" in capsys.readouterr().err
