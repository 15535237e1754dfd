"""``python -m inference serve`` of the tiny random LLaMA in a subprocess, for tests that talk to
an OpenAI-compatible endpoint (the server's own tests, the LLM judge's)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from inference.loading import LoadedModel
from inference.random_model import tiny_llama, word_tokenizer


def tiny_engine() -> LoadedModel:
    """The tiny model in this process, with the compiled kernels built (or found) first: a
    server stopped while it builds them would leave their lock behind."""
    from inference.config import SHAPES
    from inference.kernels import compiled_kernels

    compiled_kernels()
    tokenizer = word_tokenizer(SHAPES["tiny"].vocab_size)
    return LoadedModel(model=tiny_llama(0), tokenizer=tokenizer, fingerprint="tiny", path="")


def tiny_model_dir(root: Path, *, context: int | None = None) -> Path:
    """The tiny model saved as a Hugging Face directory under ``root`` (a ``--model`` for
    ``python -m inference serve``); ``context``: a longer context than its 256 tokens."""
    engine = tiny_engine()
    if context is not None:
        engine.model.config.max_position_embeddings = context
    model_dir = root / "tiny-llama"
    engine.model.save_pretrained(model_dir)
    engine.tokenizer.save_pretrained(model_dir)
    return model_dir


@contextmanager
def tiny_server(root: Path, *, policy: dict, name: str, api_key: str | None,  # fmt: skip
                extra: tuple[str, ...] = (), context: int | None = None) -> Iterator[str]:
    """Serve the tiny model (saved under ``root``) on a free loopback port; yields the base URL
    (``http://127.0.0.1:PORT/v1``) once the socket listens; stopped on exit. ``context``: a
    longer context than the tiny shape's 256 tokens (a judge's instruction needs ~300)."""
    model_dir = tiny_model_dir(root, context=context)
    env = {**os.environ, "INFERENCE_API_KEY": api_key or ""}
    log_path = root / "server.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "inference", "serve", "--model", str(model_dir),
             "--cache-dir", str(root / "cache"), "--policy", json.dumps(policy), "--name", name,
             "--port", "0", "--log-level", "warning", *extra],
            stdout=subprocess.PIPE, stderr=log, text=True, env=env,
        )  # fmt: skip
    try:
        line = process.stdout.readline()  # printed once the socket listens
        if not line.startswith("serving"):
            raise AssertionError(f"server did not start: {line!r}\n{log_path.read_text()}")
        yield line.rsplit(" at ", 1)[1].strip()
    finally:
        process.terminate()
        process.wait(timeout=30)
