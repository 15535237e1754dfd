"""Batch-1 decoding with per-step control of the sparsity policy (gpt-fast style loop).

The loop is ours rather than ``model.generate`` because a dynamic policy changes every layer's
threshold between decode steps, based on the previous step's next-token distribution.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from inference.decoder import decoder_for
from inference.loading import LoadedModel
from inference.model_info import PromptSize, PromptTooLong, chat_token_ids, context_overflow
from inference.policies import Policy
from inference.sparse_mlp import set_thresholds, sparse_mlps
from inference.sparsify import sparsify
from inference.telemetry import Telemetry


@dataclass
class GenerationResult:
    """One generation and its telemetry. ``active_fraction`` is the share of MLP activations kept,
    averaged over layers and decode steps (the prompt's when no decode step ran)."""

    text: str
    prompt_tokens: int
    new_tokens: int
    latency_s: float
    tokens_per_s: float
    peak_rss_bytes: int
    active_fraction: float
    active_fraction_per_layer: list[float]
    finish_reason: str
    prefill_s: float = 0.0
    token_ids: list[int] = field(default_factory=list)
    # Weight bytes read per decode step, from the modules' actual active counts (a step that
    # reads every weight: dense_weight_bytes_per_token): MLP, attention projections, and in
    # total (with the LM head; embedding rows and norms are left out).
    weight_bytes_read_per_token: float = 0.0
    mlp_weight_bytes_read_per_token: float = 0.0
    attention_weight_bytes_read_per_token: float = 0.0
    dense_weight_bytes_per_token: float = 0.0
    # Work the MLPs skipped per decode step: weight bytes not read, multiply-adds not done
    # (2 FLOPs per weight), share of dense MLP bytes (negative if a predictor costs more).
    mlp_bytes_skipped_per_token: float = 0.0
    mlp_flops_skipped_per_token: float = 0.0
    mlp_bytes_skipped_fraction: float = 0.0
    # 1 - active_fraction: the sparsity the policy really achieved (decode steps).
    achieved_sparsity: float = 0.0
    # Time from the call to the first generated token (prefill + first sample).
    ttft_s: float = 0.0
    # torch.cuda.max_memory_allocated during the generation; 0 when the model is on CPU.
    cuda_peak_bytes: int = 0
    device: str = "cpu"  # where the prompt goes: the model's, or a split model's hot device
    # Bytes of parameters and buffers on each device ({"cpu": ...} unless split over devices).
    weight_bytes_per_device: dict[str, int] = field(default_factory=dict)
    # Share of kept MLP activations computed in a hot/cold split model's hot block (decode
    # steps; the prompt's when none ran); 1.0 for a model that is not split.
    hot_activation_share: float = 1.0
    # Mean time of one decode step (controller, forward, sampling, streaming); 0 without one.
    decode_latency_s_per_token: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def prompt_ids(tokenizer, prompt: str | list[dict], *, raw: bool = False) -> torch.Tensor:
    """Token ids ``[1, S]`` of ``prompt`` under the chat template (text = one user message);
    ``raw``: the text as it is, without the template (a plain completion)."""
    if raw:
        if not isinstance(prompt, str) or not prompt:
            raise ValueError("a raw prompt is a non-empty text")
        return torch.tensor([list(tokenizer(prompt)["input_ids"])])
    return torch.tensor([chat_token_ids(tokenizer, prompt)])


def check_fits(model: nn.Module, input_ids: torch.Tensor, max_new_tokens: int) -> None:
    """Raise ``PromptTooLong`` unless the prompt ``[1, S]`` and ``max_new_tokens`` fit the
    model's context (``max_position_embeddings``): past it a LLaMA's positions are ones it was
    never trained on, and its output is noise, not a shorter answer."""
    size = PromptSize(tokens=input_ids.shape[1], characters=0)
    problem = context_overflow(
        size, max_new_tokens=max_new_tokens, context=model.config.max_position_embeddings
    )
    if problem:
        raise PromptTooLong(problem)


def stop_token_ids(loaded: LoadedModel) -> set[int]:
    """End-of-sequence ids from the tokenizer and the model's generation config."""
    ids = {loaded.tokenizer.eos_token_id}
    config_eos = getattr(loaded.model.generation_config, "eos_token_id", None)
    ids.update(config_eos if isinstance(config_eos, list) else [config_eos])
    ids.discard(None)
    return ids


def sample(logits: torch.Tensor, temperature: float, generator: torch.Generator) -> torch.Tensor:
    """Greedy at ``temperature == 0``, else a draw from softmax(logits / temperature). -> [1, 1]"""
    if temperature == 0.0:
        return logits.argmax(dim=-1, keepdim=True)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator)


def entropy_nats(logits: torch.Tensor) -> float:
    """Entropy of softmax(logits) for a single row ``[1, V]``."""
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    return float(-(log_probs.exp() * log_probs).sum())


@torch.inference_mode()
def generate(
    loaded: LoadedModel,
    prompt: str | list[dict],
    policy: Policy,
    *,
    max_new_tokens: int = 128,
    seed: int = 0,
    temperature: float = 0.0,
    on_text: Callable[[str], None] | None = None,
    stop: Sequence[str] = (),
    raw: bool = False,
    clock: Callable[[], float] = time.perf_counter,
) -> GenerationResult:
    """Generate a reply to ``prompt`` under ``policy``.

    ``prompt``: text (wrapped as one user chat message) or a list of chat messages.
    Greedy when ``temperature == 0``, else sampling seeded by ``seed`` (reproducible).
    The policy's base thresholds apply to the prompt (prefill); each decode step then uses
    ``layer_thresholds * controller(previous entropy, active fraction, step latency)``. Stops at
    an EOS token (``finish_reason="stop"``, the EOS counts as a new token) or after
    ``max_new_tokens``, or when the reply contains one of the ``stop`` texts (``finish_reason
    "stop"``; the text ends before it, and ``on_text`` never receives it nor any of it).
    ``raw``: the prompt text is fed without the chat template. Raises ``PromptTooLong``
    (changing nothing) when the prompt's tokens and ``max_new_tokens`` exceed the model's
    context. The model is sparsified in place (idempotent;
    threshold 0 leaves it exact). ``on_text`` (optional) receives each new piece of decoded text
    (streaming). The prompt goes to the device of the model's parameters. ``clock`` (seconds)
    times everything (tests inject a fake one).
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if temperature < 0.0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    stop = tuple(text for text in stop if text)
    input_ids = prompt_ids(loaded.tokenizer, prompt, raw=raw)  # [1, S]
    check_fits(loaded.model, input_ids, max_new_tokens)  # before any module is changed
    model = sparsify(loaded.model, policy, loaded.fingerprint)
    mlps = sparse_mlps(model)
    base_thresholds = policy.layer_thresholds(len(mlps))
    stop_ids = stop_token_ids(loaded)
    generator = torch.Generator().manual_seed(seed)
    controller = policy.controller()
    streamer = _TextStreamer(loaded.tokenizer, stop_ids, on_text, stop)
    set_thresholds(model, base_thresholds)
    factor = 1.0  # on base_thresholds; an adaptive policy's controller moves it per step

    telemetry = Telemetry(model, mlps, clock)
    input_ids = input_ids.to(telemetry.device)
    decoder = decoder_for(model, input_ids.shape[1] + max_new_tokens)
    logits = decoder.prefill(input_ids)
    telemetry.prefill_done()
    token = sample(logits.cpu(), temperature, generator)
    tokens = [int(token)]
    telemetry.first_token()
    streamer.push(tokens)
    while tokens[-1] not in stop_ids and not streamer.stopped and len(tokens) < max_new_tokens:
        telemetry.step_start()
        if policy.adapts:
            entropy = entropy_nats(logits)
            previous = factor
            factor = controller(entropy, telemetry.last_active_fraction(), telemetry.last_step_s)
            if factor != previous:
                set_thresholds(model, base_thresholds, factor)
        logits = decoder.step(token.to(telemetry.device))
        token = sample(logits.cpu(), temperature, generator)  # .cpu() waits for a GPU
        tokens.append(int(token))
        streamer.push(tokens)
        telemetry.step_end()
    measured = telemetry.finish(len(tokens))
    set_thresholds(model, base_thresholds)

    finished = tokens[-1] in stop_ids or streamer.stopped
    return GenerationResult(
        text=streamer.finish(tokens),
        prompt_tokens=input_ids.shape[1],
        new_tokens=len(tokens),
        finish_reason="stop" if finished else "length",
        token_ids=tokens,
        **measured,
    )


class _TextStreamer:
    """Hands ``on_text`` the new text after each token (decoding the whole reply each time, so
    multi-byte characters split over tokens come out whole), and watches for the ``stop`` texts:
    text that could be the start of one is held back until the next token tells."""

    def __init__(self, tokenizer, stop_ids: set[int], on_text, stop: tuple[str, ...]) -> None:
        self.tokenizer, self.stop_ids, self.on_text, self.stop = tokenizer, stop_ids, on_text, stop
        self.sent = ""
        self.stopped = False  # the reply reached a stop text

    def text(self, tokens: list[int]) -> str:
        """The reply so far, without an EOS token and cut before a stop text."""
        ids = tokens[:-1] if tokens[-1] in self.stop_ids else tokens
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        cut = min((i for i in (text.find(s) for s in self.stop) if i >= 0), default=None)
        if cut is not None:
            self.stopped = True
            return text[:cut]
        return text

    def push(self, tokens: list[int]) -> None:
        if self.on_text is None and not self.stop:
            return
        text = self.text(tokens)
        if text.endswith("\ufffd"):  # an incomplete UTF-8 sequence: wait for the next token
            return
        if not self.stopped:
            text = text[: len(text) - _stop_prefix_length(text, self.stop)]
        self._send(text)

    def finish(self, tokens: list[int]) -> str:
        """The whole reply; ``on_text`` gets whatever was held back."""
        text = self.text(tokens)
        self._send(text)
        return text

    def _send(self, text: str) -> None:
        if self.on_text is not None and text.startswith(self.sent) and len(text) > len(self.sent):
            self.on_text(text[len(self.sent) :])
            self.sent = text


def _stop_prefix_length(text: str, stop: tuple[str, ...]) -> int:
    """Length of the longest end of ``text`` that is the start of a stop text."""
    return max(
        (n for s in stop for n in range(min(len(s) - 1, len(text)), 0, -1) if text.endswith(s[:n])),
        default=0,
    )
