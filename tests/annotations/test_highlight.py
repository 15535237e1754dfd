"""Responses render as the model wrote them: fenced code highlighted, prose plain, all escaped."""

import html
import re

from annotations.highlight import _response, pairs_warm, shown_html

FENCED = (
    "Here is <b>my</b> answer:\n\n```python\ndef f(xs):\n    return [x for x in xs]\n```\n\n"
    "This uses a list comprehension & returns a new list."
)


def _text(rendered: str) -> str:
    """What the reader sees: tags dropped, entities decoded."""
    return html.unescape(re.sub(r"<[^>]+>", "", rendered))


def test_fenced_code_is_highlighted_and_prose_is_plain_and_escaped():
    rendered = _response(FENCED)
    assert _text(rendered) == FENCED, "the rendering must show exactly the model's text"
    assert '<span class="k">def</span>' in rendered and '<span class="k">return</span>' in rendered
    assert "<b>" not in rendered and "&lt;b&gt;my&lt;/b&gt;" in rendered
    prose = rendered[rendered.rindex("</span>") :]
    assert 'class="nb"' not in prose, "prose after the fence must not be highlighted as code"
    assert 'class="err"' not in rendered, "fences must not show as syntax errors"
    assert rendered.count('class="fence"') == 2


def test_a_fence_cut_off_by_the_token_limit_and_other_languages():
    cut = "Sure:\n```py\ndef g():\n    return 1"
    rendered = _response(cut)
    assert _text(rendered) == cut and rendered.count('class="fence"') == 1
    assert '<span class="k">def</span>' in rendered
    shell = "Run:\n```bash\necho '<script>x</script>'\n```\n"
    assert _text(_response(shell)) == shell and "<script>" not in _response(shell)
    odd = "```not-a-language\n<i>x</i>\n```"
    assert _text(_response(odd)) == odd and "<i>" not in _response(odd)


def test_an_output_without_fences_is_all_code_and_diffs_escape():
    raw = "def h():\n    return '<img src=x onerror=alert(1)>'\n"
    rendered, _, diff = map(str, shown_html(raw, "a = '<svg onload=alert(1)>'\n"))
    assert _text(rendered) == raw and "<img" not in rendered
    assert '<span class="k">def</span>' in rendered
    assert "<svg" not in diff and "&lt;svg" in diff and "&lt;img" in diff


def _spans(rendered: str) -> list[str]:
    return re.findall(r'<span class="[^"]*">', rendered)


def test_prose_without_fences_is_plain_escaped_text():
    prose = "I can't solve this: it's <b>too</b> hard & the list isn't sorted (sorry)."
    rendered = _response(prose)
    assert _text(rendered) == prose
    assert _spans(rendered) == [], "prose must not be highlighted as Python"
    assert "<b>" not in rendered and "&lt;b&gt;too&lt;/b&gt;" in rendered


def test_code_without_fences_is_highlighted_and_the_prose_around_it_is_not():
    answer = (
        "Here's the function, it's short:\n\ndef f(xs):\n    return [x for x in xs if x < 3]\n"
        "\nIt doesn't sort <i>anything</i>; that's all."
    )
    rendered = _response(answer)
    assert _text(rendered) == answer
    start, end = rendered.index('<span class="k">def</span>'), rendered.rindex("</span>")
    assert _spans(rendered[:start]) == [] and _spans(rendered[end:]) == [], rendered
    assert "&lt;" in rendered[start:end] and "<i>" not in rendered


def test_code_cut_mid_way_shows_no_error_boxes():
    cut = "```python\ndef f(xs):\n    return $xs ? 1"
    rendered = _response(cut)
    assert _text(rendered) == cut and '<span class="k">def</span>' in rendered
    assert 'class="err"' not in rendered, rendered
    # Without a fence, code that does not parse is not told from prose: plain, no boxes.
    unfenced = "def f(xs):\n    return xs ?"
    assert _response(unfenced) == html.escape(unfenced)


def test_hostile_markup_in_prose_and_code_is_escaped_everywhere():
    payload = "<script>alert(1)</script><img src=x onerror=alert(2)>"
    answers = [
        payload,
        f"Note {payload}\n\ndef f():\n    return '{payload}'\n\nbye {payload}",
        f"```python\nx = '{payload}'\n```\n{payload}\n```html\n{payload}",
        f"```python\ndef f():\n    return $ {payload}",
    ]
    for answer in answers:
        rendered = _response(answer)
        assert _text(rendered) == answer
        assert "<script" not in rendered and "<img" not in rendered, rendered


def _reads(url: str) -> int:
    """GET and MGET commands the Redis server has answered so far."""
    return _commands(url, ("get", "mget"))


_WRITES = ("set", "mset", "setex", "psetex", "expire", "pexpire")


def _commands(url: str, names: tuple[str, ...]) -> int:
    import redis

    stats = redis.Redis.from_url(url).info("commandstats")
    return sum(stats.get(f"cmdstat_{name}", {}).get("calls", 0) for name in names)


def test_a_pair_is_read_in_one_round_trip_and_survives_a_redis_outage(tmp_path, settings):
    from django.core.cache import caches

    from tests.support.servers import private_redis

    left, right = "def a():\n    return 1\n", "def b():\n    return '<i>2</i>'\n"
    with private_redis(tmp_path) as redis:
        settings.CACHES = {**settings.CACHES, "html": {
            "BACKEND": "webapp.cache.RedisCache", "LOCATION": redis.url}}
        cold = shown_html(left, right)
        assert cold[:2] == (_response(left), _response(right))
        assert "<i>" not in cold[1] and "&lt;i&gt;" in cold[1]
        assert "-def a():" in _text(cold[2]) and "+def b():" in _text(cold[2])
        before = _reads(redis.url)
        assert shown_html(left, right) == cold
        after = _reads(redis.url)
        assert after - before == 1, f"a warm pair took {after - before} reads of the cache"
        same = shown_html(left, left)
        assert same[0] == same[1] == cold[0], "identical sides share one entry"

        # Warming (done when pairs are made) covers both sides; a page then builds nothing.
        other = "def c():\n    return 3\n"
        assert pairs_warm([(left, other)]) == 3, "one new output and two diffs to build"
        assert pairs_warm([(left, other), (other, left)]) == 0
        writes = _commands(redis.url, _WRITES)
        assert shown_html(other, left)[0] == _response(other)
        assert _commands(redis.url, _WRITES) == writes, "a warmed pair was built again"

        redis.kill()
        caches["html"].close()
        assert shown_html(left, right) == cold, "a cache outage must cost the build only"
        assert pairs_warm([(right, other)]) == 0, "a cache outage must not fail pairing"
