"""Whether prompts fit the configured model's context, checked where they come in: the setup
page and the data set import. No torch here (`inference.model_info`): the model's tokenizer
counts exactly once a worker has loaded the model; before that, for a GGUF, a lower bound from
its vocabulary refuses only prompts that are too long for sure. The worker checks each prompt
again, exactly, before it decodes (`inference.generate.check_fits`)."""

from __future__ import annotations

from django.conf import settings

from inference.model_info import context_length, context_overflow, default_model_path, prompt_sizes


def prompts_overflow(prompts: list[str], *, max_new_tokens: int) -> list[str | None]:
    """For each prompt, why it does not fit the model with `max_new_tokens` new tokens, or None.

    Raises OSError when the configured model cannot be read."""
    path = settings.MODEL_PATH or default_model_path()
    sizes = prompt_sizes(prompts, path=path, cache_root=settings.MODEL_CACHE_DIR)
    context = context_length(path)
    return [context_overflow(s, max_new_tokens=max_new_tokens, context=context) for s in sizes]
