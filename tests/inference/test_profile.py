import json

import pytest
import torch

from inference.__main__ import main
from inference.generate import generate, prompt_ids
from inference.policies import CalibratedPolicy, Policy
from inference.profile import (
    EDGES,
    Profile,
    calibrate,
    calibrated_policy,
    humaneval_prompts,
    profile_model,
)

PROMPTS = ["w1 w2 w3", "w4 w5 w6 w7 w8", "w9 w10"]


@pytest.fixture
def profile(tiny) -> Profile:
    return profile_model(tiny, PROMPTS, max_new_tokens=3)


def test_counts_every_token_once(tiny, profile):
    prompt_tokens = sum(prompt_ids(tiny.tokenizer, p).shape[1] for p in PROMPTS)
    decode_steps = sum(
        generate(tiny, p, Policy.from_json({"kind": "dense"}), max_new_tokens=3).new_tokens - 1
        for p in PROMPTS
    )
    assert profile.tokens == prompt_tokens + decode_steps
    assert profile.prompts == 3
    assert profile.counts.shape == (3, 96, len(profile.thresholds))
    assert (profile.hist.sum(dim=1) == profile.tokens * 96).all()
    assert profile.fingerprint == "tiny"


def test_frequency_falls_with_threshold(profile):
    freqs = [profile.frequency(t) for t in profile.thresholds]
    for lower, higher in zip(freqs, freqs[1:], strict=False):
        assert (higher <= lower).all()
    assert ((freqs[0] >= 0) & (freqs[0] <= 1)).all()
    with pytest.raises(ValueError, match="not profiled"):
        profile.frequency(0.123)


def test_quantiles_and_expected_active_fraction_agree(profile):
    for q in (0.2, 0.5, 0.8):
        thresholds = profile.quantiles(q)
        assert len(thresholds) == 3
        for active in profile.active_fraction(thresholds):
            assert active == pytest.approx(1 - q, abs=0.02)


def test_concentration_is_monotone_and_at_least_uniform(profile):
    shares = profile.concentration(profile.thresholds[2])
    values = list(shares.values())
    assert values == sorted(values)
    for k, share in shares.items():
        assert share >= k / 100 - 0.02


def test_save_load_round_trip(profile, tmp_path):
    path = tmp_path / "p.safetensors"
    profile.save(path)
    again = Profile.load(path)
    assert again.fingerprint == profile.fingerprint
    assert again.thresholds == profile.thresholds
    assert again.tokens == profile.tokens
    assert torch.equal(again.counts, profile.counts)
    assert torch.equal(again.hist, profile.hist)
    assert again.site_hist.keys() == {"gate", "input"}
    assert torch.equal(again.site_hist["input"], profile.site_hist["input"])
    assert "3 layers x 96 neurons" in again.summary()


def test_calibrated_policy_hits_target_sparsity(tiny, profile):
    policy = calibrated_policy(profile, 0.5)
    assert isinstance(policy, CalibratedPolicy)
    assert policy.profile == "tiny"
    assert Policy.from_json(json.loads(json.dumps(policy.to_dict()))) == policy
    result = generate(tiny, PROMPTS[1], policy, max_new_tokens=6)
    # Measured on decode steps of one prompt: near the calibration target.
    assert result.active_fraction == pytest.approx(0.5, abs=0.2)
    assert calibrated_policy(profile, 0.0).layer_thresholds(3) == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("site", ["gate", "input"])
def test_calibrated_policy_per_site_hits_target_sparsity(tiny, profile, site):
    assert profile.site_hist["input"].shape == (3, 4, profile.hist.shape[1])
    # down's input is h: the input site's last group is the h histogram
    assert torch.equal(profile.site_hist["input"][:, 3], profile.hist)
    policy = calibrated_policy(profile, 0.5, site)
    assert policy.site == site and len(policy.thresholds) == 3
    assert all(isinstance(t, tuple) and len(t) == 4 for t in policy.thresholds) == (
        site == "input"
    )
    expected = profile.active_fraction(list(policy.thresholds), site)
    assert expected == pytest.approx([0.5] * 3, abs=0.02)
    result = generate(tiny, PROMPTS[1], policy, max_new_tokens=6)
    assert result.active_fraction == pytest.approx(0.5, abs=0.2)


def test_an_old_profile_cannot_calibrate_the_new_sites(profile):
    old = Profile(**{**profile.__dict__, "site_hist": {}})
    with pytest.raises(ValueError, match="run `python -m inference profile` again"):
        calibrated_policy(old, 0.5, "gate")


def test_calibrated_policy_rejects_wrong_layer_count():
    policy = CalibratedPolicy(target_sparsity=0.5, thresholds=(0.1, 0.2))
    with pytest.raises(ValueError, match="2 layer thresholds, the model has 3"):
        policy.layer_thresholds(3)
    with pytest.raises(ValueError, match="target_sparsity"):
        CalibratedPolicy(target_sparsity=1.0, thresholds=(0.1,))


def test_humaneval_prompts_are_bundled():
    prompts = humaneval_prompts(2)
    assert len(prompts) == 2
    assert "def has_close_elements" in prompts[0]


def test_cli_calibrate(profile, tmp_path, capsys):
    path = tmp_path / "p.safetensors"
    profile.save(path)
    assert main(["calibrate", "--profile", str(path), "--target-sparsity", "0.4"]) == 0
    out = capsys.readouterr()
    policy = Policy.from_json(json.loads(out.out))
    assert policy.target_sparsity == 0.4
    assert "achieved on the calibration set" in out.err
    argv = ["calibrate", "--profile", str(path), "--target-sparsity", "0.4", "--site", "input"]
    assert main(argv) == 0
    policy = Policy.from_json(json.loads(capsys.readouterr().out))
    assert policy.site == "input" and len(policy.thresholds[0]) == 4


def test_cli_calibrates_a_static_or_dynamic_policy_as_a_study_does(profile, tmp_path, capsys):
    path = tmp_path / "p.safetensors"
    profile.save(path)
    base = {"kind": "dynamic", "entropy_scale": 1.0, "site": "gate"}
    argv = ["calibrate", "--profile", str(path), "--target-sparsity", "0.4"]
    assert main([*argv, "--policy", json.dumps(base)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == calibrate(profile, base, 0.4).policy.to_dict()
    assert printed["kind"] == "dynamic" and printed["threshold"] > 0
    with pytest.raises(SystemExit) as exited:
        main([*argv, "--policy", "{not json"])
    assert exited.value.code == 2 and "--policy is not JSON" in capsys.readouterr().err


def test_profiling_reports_progress_after_each_prompt(tiny, profile):
    shares = []
    again = profile_model(tiny, PROMPTS, max_new_tokens=3, progress=shares.append)
    assert shares == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert torch.equal(again.hist, profile.hist) and again.tokens == profile.tokens
    with pytest.raises(ValueError, match="no prompts"):
        profile_model(tiny, [])


def test_profiles_add_up_prompt_by_prompt(tiny, profile):
    parts = [profile_model(tiny, [prompt], max_new_tokens=3) for prompt in PROMPTS]
    total = parts[0].plus(parts[1]).plus(parts[2])
    assert total.tokens == profile.tokens and torch.equal(total.hist, profile.hist)
    assert torch.equal(total.site_hist["input"], profile.site_hist["input"])


@pytest.mark.parametrize("kind", ["static", "dynamic", "calibrated"])
@pytest.mark.parametrize("site", ["h", "gate", "input"])
def test_thresholds_reach_the_target_at_every_site(kind, site):
    layers, bins = 3, len(EDGES) - 1
    generator = torch.Generator().manual_seed(0)

    def histogram(*shape):  # magnitudes spread over bins 2000..3000, more in later layers
        hist = torch.zeros(*shape, bins, dtype=torch.int64)
        hist[..., 2000:3000] = torch.randint(1, 50, (*shape, 1000), generator=generator)
        return hist

    profile = Profile(
        fingerprint="synthetic", thresholds=(0.01,), tokens=100, prompts=1,
        counts=torch.zeros(layers, 8, 1, dtype=torch.int64), hist=histogram(layers),
        site_hist={"gate": histogram(layers), "input": histogram(layers, 4)},
    )
    extra = {"entropy_scale": 1.0} if kind == "dynamic" else {}
    result = calibrate(profile, {"kind": kind, "site": site, **extra}, 0.4)
    assert result.sparsity == pytest.approx(0.4, abs=0.01), f"{kind} @{site}: {result.sparsity}"
    assert result.policy.kind == kind and result.policy.site == site
    if kind != "calibrated":  # one threshold for every layer
        assert len(set(result.policy.layer_thresholds(layers))) == 1
