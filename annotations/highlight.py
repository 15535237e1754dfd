"""Model outputs as highlighted, escaped HTML, built once for every web process.

Each output is shown to several raters and never changes, so highlighting it (the costliest
step of a rate page) is done once: the HTML is kept in the shared "html" cache (Redis, or
files under VAR_DIR), and `pairs_warm` builds it, with the diffs, when the output's pairs
are made, before any rater asks; a rate page reads its pair's three pieces in one round
trip. Pygments escapes every character it emits and the prose around the code is escaped,
so the HTML is safe to mark safe."""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import re
from collections.abc import Callable, Iterable
from html import escape

from django.core.cache import caches
from django.utils.safestring import SafeString, mark_safe
from pygments import highlight
from pygments.filter import simplefilter
from pygments.formatters import HtmlFormatter
from pygments.lexers import DiffLexer, PythonLexer, TextLexer, get_lexer_by_name
from pygments.token import Error, Text
from pygments.util import ClassNotFound

from annotations.sessions import CACHE_DOWN
from evaluation.code_extraction import unfenced_code_lines

_FORMATTER = HtmlFormatter(nowrap=True)
# Longer than a study runs between its outputs' pairing and the last rater.
_CACHE_S = 14 * 24 * 3600
# The cache kind of a rendered output; a new name whenever `_response` renders differently.
_OUTPUT = "out3"


def _key(kind: str, source: str) -> str:
    return f"{kind}:{hashlib.sha256(source.encode('utf-8', 'surrogatepass')).hexdigest()}"


def _build_missing(
    wanted: dict[str, Callable[[], str]], *, build_when_down: bool
) -> tuple[dict[str, str], dict[str, str]]:
    """Read the (key -> build) pieces from the shared cache in one round trip, build and
    store in one write what it lacks; returns (what was cached, what was built). With the
    cache down it builds everything if `build_when_down`, else nothing."""
    try:
        cached = caches["html"].get_many(list(wanted))
    except CACHE_DOWN:
        if not build_when_down:
            return {}, {}
        cached = {}
    built = {key: build() for key, build in wanted.items() if key not in cached}
    if built:
        with contextlib.suppress(*CACHE_DOWN):  # a cache down costs the rebuild
            caches["html"].set_many(built, _CACHE_S)
    return cached, built


def _shared(wanted: list[tuple[str, Callable[[], str]]]) -> list[SafeString]:
    """The HTML for each (key, build), read from the shared cache in one round trip; what
    it lacks is built and stored. A cache that is down costs the builds, not the page."""
    cached, built = _build_missing(dict(wanted), build_when_down=True)
    html = {**cached, **built}
    # Pygments output and escaped prose, built here (Pygments escapes every character).
    return [mark_safe(html[key]) for key, _ in wanted]  # noqa: S308


# A fenced block: the opening fence (with its language), the code, and the closing fence —
# absent when the output was cut off by the token limit.
_FENCE = re.compile(r"^(```[ \t]*([\w+#.-]*)[^\n]*)\n(.*?)(^```[ \t]*$|\Z)", re.M | re.S)


@simplefilter
def _errors_as_text(self, lexer, stream, options):
    """Code the model cut off mid-way lexes into `Error` tokens: shown as plain text, not
    in the style's red boxes (a rater would read them as our error, or as a hint)."""
    for token, value in stream:
        yield (Text if token in Error else token), value


def _lexer(language: str):
    if language.lower() in ("", "python", "py", "python3"):
        lexer = PythonLexer(stripnl=False, ensurenl=False)
    else:
        try:
            lexer = get_lexer_by_name(language, stripnl=False, ensurenl=False)
        except ClassNotFound:
            lexer = TextLexer(stripnl=False, ensurenl=False)
    lexer.add_filter(_errors_as_text())
    return lexer


def _code(text: str, language: str = "python") -> str:
    html = highlight(text, _lexer(language), _FORMATTER)
    # Pygments ends its last line with a newline the text may not have had.
    return html[:-1] if html.endswith("\n") and not text.endswith("\n") else html


def _response(text: str) -> str:
    """The output exactly as the model wrote it: fenced blocks highlighted in their language,
    the fences muted, the prose around them plain; in an output without fences, the lines
    the Pass@1 check takes for code highlighted as Python, the prose around them plain."""
    if not _FENCE.search(text):
        return _unfenced(text)
    parts, pos = [], 0
    for match in _FENCE.finditer(text):
        opening, language, code, closing = match.groups()
        fence = f'<span class="fence">{escape(opening)}</span>\n'
        parts += [escape(text[pos : match.start()]), fence, _code(code, language)]
        if closing:
            parts.append(f'<span class="fence">{escape(closing)}</span>')
        pos = match.end()
    parts.append(escape(text[pos:]))
    return "".join(parts)


def _unfenced(text: str) -> str:
    span = unfenced_code_lines(text)
    if span is None:
        return escape(text)
    lines = text.split("\n")
    start, end = span
    before = "".join(line + "\n" for line in lines[:start])
    after = "".join("\n" + line for line in lines[end:])
    return escape(before) + _code("\n".join(lines[start:end])) + escape(after)


def _output(text: str) -> tuple[str, Callable[[], str]]:
    return _key(_OUTPUT, text), lambda: _response(text)


def _diff(left: str, right: str) -> tuple[str, Callable[[], str]]:
    def build() -> str:
        lines = difflib.unified_diff(
            left.splitlines(), right.splitlines(), "Response 1 (left)", "Response 2 (right)",
            lineterm="",
        )
        return highlight("\n".join(lines), DiffLexer(), _FORMATTER)

    return _key("diff", f"{len(left)}:{left}{right}"), build


def shown_html(left: str, right: str) -> tuple[SafeString, SafeString, SafeString]:
    """What a rate page shows of a pair: both outputs as highlighted HTML and a unified
    diff from left to right, highlighted (and so escaped), in one read of the shared cache
    (one round trip, not three)."""
    left_html, right_html, diff = _shared([_output(left), _output(right), _diff(left, right)])
    return left_html, right_html, diff


def pairs_warm(pairs: Iterable[tuple[str, str]]) -> int:
    """Build what the cache lacks of the rate pages these pairs of outputs will make: each
    output, and the diff with either on the left (a rater may see either side). Called
    when pairs are made, so no rater waits for it; one read for all, one write. Returns
    how many pieces were built."""
    wanted: dict[str, Callable[[], str]] = {}
    for a, b in pairs:
        wanted.update([_output(a), _output(b), _diff(a, b), _diff(b, a)])
    if not wanted:
        return 0
    # A cache that is down builds nothing here: the pages will build what they show.
    return len(_build_missing(wanted, build_when_down=False)[1])
