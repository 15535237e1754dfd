"""Model outputs as highlighted, escaped HTML, built once for every web process.

Each output is shown to several raters and never changes, so highlighting it (the costliest
step of a rate page) is done once: the HTML is kept in the shared "html" cache (Redis, or
files under VAR_DIR), with a small per-process LRU in front, and `outputs_warm` builds it
when the output's pairs are made, before any rater asks. Pygments escapes every character
it emits, so the HTML is safe to mark safe."""

from __future__ import annotations

import contextlib
import difflib
import functools
import hashlib
from collections.abc import Callable, Iterable

from django.core.cache import caches
from django.utils.safestring import SafeString, mark_safe
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import DiffLexer, PythonLexer
from redis.exceptions import RedisError

_FORMATTER = HtmlFormatter(nowrap=True)
# Longer than a study runs between its outputs' pairing and the last rater.
_CACHE_S = 14 * 24 * 3600
# What a cache that is down raises: it then costs only the rebuild, never the page.
_CACHE_DOWN = (RedisError, OSError)


def _key(kind: str, source: str) -> str:
    return f"{kind}:{hashlib.sha256(source.encode('utf-8', 'surrogatepass')).hexdigest()}"


def _shared(kind: str, source: str, build: Callable[[], str]) -> SafeString:
    key = _key(kind, source)
    try:
        html = caches["html"].get(key)
    except _CACHE_DOWN:
        html = None
    if html is None:
        html = build()
        with contextlib.suppress(*_CACHE_DOWN):
            caches["html"].set(key, html, _CACHE_S)
    return mark_safe(html)  # noqa: S308 - Pygments output, built here (escapes every character)


def _python(text: str) -> str:
    return highlight(text, PythonLexer(), _FORMATTER)


@functools.lru_cache(maxsize=256)
def output_html(text: str) -> SafeString:
    """A model output as highlighted HTML."""
    return _shared("py", text, lambda: _python(text))


def diff_html(left: str, right: str) -> SafeString:
    """A unified diff from the left to the right response, highlighted (and so escaped)."""

    def build() -> str:
        lines = difflib.unified_diff(
            left.splitlines(), right.splitlines(), "Response 1 (left)", "Response 2 (right)",
            lineterm="",
        )
        return highlight("\n".join(lines), DiffLexer(), _FORMATTER)

    return _shared("diff", f"{len(left)}:{left}{right}", build)


def outputs_warm(texts: Iterable[str]) -> int:
    """Build the HTML of outputs the cache lacks (called when pairs are made); how many."""
    built = 0
    for text in set(texts):
        try:
            if caches["html"].has_key(_key("py", text)):
                continue
        except _CACHE_DOWN:
            return built
        _shared("py", text, lambda text=text: _python(text))
        built += 1
    return built
