"""Command line: ``python -m inference COMMAND ...`` (generate, serve, profile, calibrate,
predict, plan, model-info).

See docs/engine.md. The engine's benchmarks have their own: ``python -m benchmarks``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from inference.policies import SITES, policy_argument  # noqa: E402  (after the offline switch)
from inference.profile import CALIBRATION_NEW_TOKENS  # noqa: E402


def _cmd_generate(args: argparse.Namespace) -> int:
    from inference.generate import generate

    prompt = args.prompt if args.prompt is not None else args.prompt_option
    if prompt is None:
        raise ValueError('a prompt is needed: python -m inference generate [...] "prompt"')
    from inference.devices import DeviceNames, device_misuse
    from inference.hot_cold import model_place, split_hot_cold

    # Misuse is refused before the (slow) load; model_place checks the same for the worker.
    split = args.plan is not None or args.hot_fraction is not None
    misuse = device_misuse(
        device=args.device, split=split,
        hot_device=args.hot_device, cold_device=args.cold_device,
        names=DeviceNames("--device", "--plan or --hot-fraction", "--hot-device/--cold-device"),
    )
    if misuse:
        raise ValueError(misuse)
    if args.hot_fraction is not None and args.plan is not None:
        raise ValueError("give --plan or --hot-fraction, not both")
    if args.hot_fraction is not None and args.profile is None:
        raise ValueError("--hot-fraction needs --profile (a file from `profile`)")
    loaded = _load_model(args)
    devices = {"hot_device": args.hot_device, "cold_device": args.cold_device}
    if args.hot_fraction is not None:
        from inference.profile import Profile

        frequency = Profile.load(args.profile).frequency(args.activity_threshold)
        split_hot_cold(loaded.model, frequency, args.hot_fraction, **devices)
    else:
        placement = model_place(
            loaded.model, fingerprint=loaded.fingerprint, device=args.device, plan=args.plan,
            **devices,
        )
        if placement is not None and placement.profile is None:
            print("note: the plan has no profile; neurons keep their order", file=sys.stderr)

    def stream(piece: str) -> None:
        sys.stdout.write(piece)
        sys.stdout.flush()

    result = generate(
        loaded,
        prompt,
        args.policy,
        max_new_tokens=args.max_new_tokens,
        seed=args.seed,
        temperature=args.temperature,
        on_text=None if args.json else stream,
    )
    if args.json:
        telemetry = result.to_dict()
        text = telemetry.pop("text")
        print(
            json.dumps(
                {
                    "text": text,
                    "telemetry": telemetry,
                    "policy": args.policy.to_dict(),
                    "fingerprint": loaded.fingerprint,
                }
            )
        )
        return 0
    print()
    print(
        f"\n[{args.policy.label()}] {result.new_tokens} new tokens ({result.finish_reason}), "
        f"prompt {result.prompt_tokens} tokens, {result.latency_s:.2f} s "
        f"({result.tokens_per_s:.1f} tok/s, first token {result.ttft_s:.2f} s), "
        f"achieved sparsity {result.achieved_sparsity:.3f}, "
        f"MLP bytes skipped {result.mlp_bytes_skipped_fraction:.1%}, "
        f"peak RSS {result.peak_rss_bytes / 2**20:.0f} MiB, model {loaded.fingerprint}",
        file=sys.stderr,
    )
    if split:
        per_device = result.weight_bytes_per_device.items()
        placed = ", ".join(f"{device} {n / 2**20:.0f} MiB" for device, n in per_device)
        print(
            f"hot/cold split: weights {placed}; "
            f"activations served by the hot block {result.hot_activation_share:.1%}",
            file=sys.stderr,
        )
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    import socket

    import uvicorn

    from inference.hot_cold import model_place
    from inference.serve import Condition, api_key_for, build_app

    api_key = api_key_for(args.host, os.environ)  # refused before the (slow) load
    if args.queue < 0 or args.max_tokens < 1:
        raise ValueError("--queue must be >= 0 and --max-tokens >= 1")
    loaded = _load_model(args)
    model_place(loaded.model, fingerprint=loaded.fingerprint, device=args.device)
    name = args.name or args.policy.kind
    app = build_app(
        Condition(loaded, args.policy, name), api_key=api_key, queue_size=args.queue,
        default_max_tokens=args.max_tokens,
    )
    # Bound and listening before the URL is printed, so a client that reads it can connect
    # (--port 0 takes a free port).
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host.strip("[]"), args.port))
    sock.listen(128)
    host, port = sock.getsockname()[:2]
    host = f"[{host}]" if family == socket.AF_INET6 else host
    print(f"serving {name!r} ({args.policy.label()}, model {loaded.fingerprint}) at "
          f"http://{host}:{port}/v1", flush=True)  # fmt: skip
    config = uvicorn.Config(app, log_level=args.log_level, timeout_graceful_shutdown=5)
    uvicorn.Server(config).run(sockets=[sock])
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from inference.predictor_training import train_predictors
    from inference.profile import humaneval_prompts

    loaded = _load_model(args)

    def progress(layer: int, m: dict) -> None:
        print(
            f"layer {layer:3d}: recall {m['recall']:.3f} precision {m['precision']:.3f} "
            f"mass recall {m['mass_recall']:.3f} "
            f"predicted active {m['predicted_active']:.3f} (true {m['true_active']:.3f}); "
            f"at recall 0.95: active {m['predicted_active_for_recall']['0.95']:.3f}",
            file=sys.stderr,
        )

    predictors = train_predictors(
        loaded,
        humaneval_prompts(args.prompts),
        eps=args.eps,
        rank=args.rank,
        steps=args.steps,
        max_new_tokens=args.max_new_tokens,
        threshold=args.threshold,
        magnitude_weighted=args.magnitude_weighted,
        progress=progress,
    )
    predictors.save(args.out)
    summary = {
        k: v
        for k, v in predictors.metrics.items()
        if k not in ("per_layer", "thresholds_for_recall")
    }
    print(json.dumps({"predictor": str(args.out), "fingerprint": loaded.fingerprint, **summary}))
    return 0


def _cmd_model_info(args: argparse.Namespace) -> int:
    from inference.loading import default_cache_dir
    from inference.model_info import describe

    cache_root = args.cache_dir if args.cache_dir is not None else default_cache_dir()
    info = describe(args.path, cache_root=cache_root).to_dict(tensors=args.tensors)
    if args.json:
        print(json.dumps(info, indent=1))
        return 0
    for key, value in info.items():
        print(f"{key}: {value}")
    return 0


def _cmd_profile(args: argparse.Namespace) -> int:
    from inference.profile import humaneval_prompts, profile_model

    loaded = _load_model(args)
    prompts = humaneval_prompts(args.prompts)
    profile = profile_model(loaded, prompts, max_new_tokens=args.max_new_tokens)
    profile.save(args.out)
    print(profile.summary())
    print(f"saved {args.out}")
    return 0


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from inference.profile import Profile, calibrate

    if (args.profile is None) == (args.predictor is None):
        raise ValueError("calibrate needs --profile (magnitude) or --predictor (recall)")
    if args.predictor is not None:
        from inference.predictor import Predictors, predictor_policy_for_recall

        if args.target_recall is None:
            raise ValueError("--predictor needs --target-recall, e.g. 0.95")
        predictors = Predictors.load(args.predictor)
        policy = predictor_policy_for_recall(predictors, str(args.predictor), args.target_recall)
        active = predictors.metrics["mean_predicted_active_for_recall"][f"{args.target_recall:g}"]
        print(
            f"target recall {args.target_recall:g}: predicted active on the held-out prompts "
            f"{active:.1%} (sparsity {1 - active:.1%})",
            file=sys.stderr,
        )
        print(json.dumps(policy.to_dict()))
        return 0
    if args.target_sparsity is None:
        raise ValueError("--profile needs --target-sparsity, e.g. 0.5")
    profile = Profile.load(args.profile)
    kind = {"kind": "calibrated"}
    try:
        base = {**kind, **json.loads(args.policy)} if args.policy else kind
    except json.JSONDecodeError as exc:
        raise ValueError(f"--policy is not JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(base, dict):
        raise ValueError("--policy must be a JSON object")
    result = calibrate(profile, {"site": args.site, **base}, args.target_sparsity)
    active = result.layer_active_fractions
    print(
        f"target sparsity {args.target_sparsity:.1%}, achieved on the calibration set "
        f"{result.sparsity:.1%} (per layer {min(active):.1%}..{max(active):.1%} active)",
        file=sys.stderr,
    )
    print(json.dumps(result.policy.to_dict()))
    return 0


def _cmd_plan(args: argparse.Namespace) -> int:
    from inference.config import shape_named
    from inference.plan import gpu_fit_summary, gpu_memory_bytes, gpu_placements, plan_placement

    shape = shape_named(args.shape)
    gpu_bytes = gpu_memory_bytes(args.gpu_mem)
    fits = gpu_placements(shape, gpu_bytes, gpus=args.gpus, context_tokens=args.context_tokens)
    print(gpu_fit_summary(shape, gpu_bytes, fits, args.context_tokens))
    frequency = None
    if args.profile is not None:
        from inference.profile import Profile

        profile = Profile.load(args.profile)
        frequency = profile.frequency(args.activity_threshold)
    print("hot-neuron placement (hybrid):")
    placement = plan_placement(shape, gpu_bytes, frequency, args.weight_format)
    if args.profile is not None:
        placement = dataclasses.replace(
            placement,
            profile=str(args.profile),
            activity_threshold=args.activity_threshold,
            profile_fingerprint=profile.fingerprint,
        )
        print(f"profile {args.profile} of {profile.fingerprint}, |h| > {args.activity_threshold:g}")
    print(placement.summary())
    if args.out is not None:
        placement.save(args.out)
        print(f"saved {args.out}")
    return 0


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, default=None, help=".gguf file or HF directory")
    parser.add_argument(
        "--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16", "int8"],
        help="auto: a GGUF's weights in the file's block formats, a directory's as stored "
        "(bf16 stays bf16); float32: dequantized; int8: projections int8 with per-output "
        "scales, the rest bf16 (the GPU's 8-bit path)",
    )  # fmt: skip
    parser.add_argument(
        "--quantize", default=os.environ.get("MODEL_QUANTIZE") or None,
        choices=["q8_0", "q4_0", "q4_1"],
        help="quantize a HF directory's matrices at load with gguf's quantizers (a GGUF: its "
        "matrices in formats without kernels, e.g. Q4_K); default $MODEL_QUANTIZE",
    )  # fmt: skip
    parser.add_argument("--cache-dir", type=Path, default=None)


def _load_model(args: argparse.Namespace):
    from inference.loading import load_model

    return load_model(
        args.model, dtype=args.dtype, cache_dir=args.cache_dir, quantize=args.quantize
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m inference")
    commands = parser.add_subparsers(dest="command", required=True)

    gen = commands.add_parser("generate", help="generate one reply under a policy")
    gen.add_argument("prompt", nargs="?", default=None, help="the user message")
    gen.add_argument("--prompt", dest="prompt_option", default=None, help="same, as an option")
    gen.add_argument(
        "--policy",
        type=policy_argument,
        default='{"kind": "dense"}',
        help='policy: a JSON file or inline JSON, e.g. \'{"kind":"static","threshold":0.05}\'',
    )
    _add_model_arguments(gen)
    gen.add_argument("--device", default="cpu", help="cpu or cuda (the whole, unsplit model)")
    gen.add_argument("--max-new-tokens", type=int, default=128)
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--temperature", type=float, default=0.0)
    gen.add_argument("--json", action="store_true", help="print the result as JSON")
    gen.add_argument("--profile", type=Path, default=None, help="profile for --hot-fraction")
    gen.add_argument(
        "--hot-fraction", type=float, default=None, help="split neurons hot/cold (skipping MLP)"
    )
    gen.add_argument("--activity-threshold", type=float, default=0.05, help="profiled |h| eps")
    gen.add_argument(
        "--plan", type=Path, default=None, help="placement plan (`plan --out`): hot/cold split"
    )
    gen.add_argument("--hot-device", default="cpu", help="split model: hot neurons, attention")
    gen.add_argument("--cold-device", default="cpu", help="split model: cold neurons")
    gen.set_defaults(func=_cmd_generate)

    srv = commands.add_parser(
        "serve", help="serve one condition as an OpenAI-compatible API (docs/engine.md)"
    )
    srv.add_argument(
        "--policy",
        type=policy_argument,
        default='{"kind": "dense"}',
        help="the condition's policy: a JSON file or inline JSON",
    )
    srv.add_argument("--name", default=None, help="model id clients ask for (default: the kind)")
    _add_model_arguments(srv)
    srv.add_argument("--device", default="cpu", help="cpu or cuda (the whole model)")
    srv.add_argument(
        "--host", default="127.0.0.1",
        help="address to bind; any but loopback needs INFERENCE_API_KEY set",
    )
    srv.add_argument("--port", type=int, default=8001, help="0: a free port (printed)")
    srv.add_argument("--queue", type=int, default=8, help="requests that may wait (then 503)")
    srv.add_argument(
        "--max-tokens", type=int, default=256, help="max_tokens of a request that gives none"
    )
    srv.add_argument(
        "--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"]
    )
    srv.set_defaults(func=_cmd_serve)

    prof = commands.add_parser("profile", help="profile MLP activations on HumanEval prompts")
    prof.add_argument("--out", type=Path, required=True, help="profile file (.safetensors)")
    prof.add_argument("--prompts", type=int, default=164, help="number of HumanEval prompts")
    prof.add_argument(
        "--max-new-tokens", type=int, default=CALIBRATION_NEW_TOKENS,
        help="greedy tokens generated per prompt (a study's calibration: "
        f"{CALIBRATION_NEW_TOKENS})",
    )
    _add_model_arguments(prof)
    prof.set_defaults(func=_cmd_profile)

    cal = commands.add_parser(
        "calibrate", help="per-layer thresholds: a target sparsity, or a predictor's recall"
    )
    cal.add_argument("--profile", type=Path, default=None, help="profile: magnitude thresholds")
    cal.add_argument("--target-sparsity", type=float, default=None, help="e.g. 0.5")
    cal.add_argument(
        "--site", default="h", choices=SITES,
        help="where the threshold applies: h, gate (CATS) or input (TEAL, per projection)",
    )
    cal.add_argument(
        "--policy", default=None,
        help="the kind to calibrate and its other fields, as a study's condition holds them "
        "(JSON, default {\"kind\": \"calibrated\"}; static and dynamic get one threshold "
        "for all layers), e.g. '{\"kind\": \"dynamic\", \"entropy_scale\": 1}'",
    )
    cal.add_argument("--predictor", type=Path, default=None, help="predictor file (`predict`)")
    cal.add_argument("--target-recall", type=float, default=None, help="e.g. 0.95")
    cal.set_defaults(func=_cmd_calibrate)

    pred = commands.add_parser("predict", help="train per-layer activation predictors")
    pred.add_argument("--out", type=Path, required=True, help="predictor file (.safetensors)")
    pred.add_argument("--prompts", type=int, default=32, help="HumanEval prompts (1/4 held out)")
    pred.add_argument("--max-new-tokens", type=int, default=16)
    pred.add_argument("--eps", type=float, default=0.05, help="label: neuron active if |h| >= eps")
    pred.add_argument("--rank", type=int, default=128)
    pred.add_argument("--steps", type=int, default=400)
    pred.add_argument("--threshold", type=float, default=0.5, help="for held-out metrics")
    pred.add_argument(
        "--magnitude-weighted",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="weight positive labels by their |h| (default; --no-magnitude-weighted: plain BCE)",
    )
    _add_model_arguments(pred)
    pred.set_defaults(func=_cmd_predict)

    plan = commands.add_parser("plan", help="place hot neurons on a GPU under a byte budget")
    plan.add_argument(
        "--gpu-mem", required=True, help="GPU memory: a size (24GiB) or a GPU (h100, h200)"
    )
    plan.add_argument("--gpus", type=int, default=1, help="GPUs for the layer-by-layer split")
    plan.add_argument("--context-tokens", type=int, default=4096, help="KV cache positions")
    plan.add_argument("--shape", default="llama-70b", help="a name from inference.config.SHAPES")
    plan.add_argument("--profile", type=Path, default=None, help="profile of this shape's model")
    plan.add_argument("--activity-threshold", type=float, default=0.05, help="profiled |h| eps")
    plan.add_argument(
        "--weight-format", default="q4_0",
        help="bytes counted as this format stores them: f32, f16, bf16, q8_0, q6_k, q4_1, "
        "q4_0, q4_k",
    )  # fmt: skip
    plan.add_argument("--out", type=Path, default=None, help="save the plan (JSON) for generate")
    plan.set_defaults(func=_cmd_plan)

    info = commands.add_parser(
        "model-info", help="validate a model path and print its architecture and fingerprint"
    )
    info.add_argument("path", type=Path, help=".gguf file or HF directory")
    info.add_argument("--json", action="store_true", help="one JSON object")
    info.add_argument("--tensors", action="store_true", help="also every tensor's shape")
    info.add_argument("--cache-dir", type=Path, default=None, help="where hashes are memoised")
    info.set_defaults(func=_cmd_model_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError) as exc:
        parser.exit(2, f"error: {exc}\n")


if __name__ == "__main__":
    sys.exit(main())
