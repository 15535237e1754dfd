"""The OpenAI-compatible server (issue 31): the official ``openai`` client against the real
server in a subprocess, serving the tiny random LLaMA (fast), and its parsing rules."""

import asyncio
import threading

import openai
import pytest

from inference.generate import generate
from inference.policies import Policy
from inference.serve import ApiError, Slot, api_key_for, parse_chat, parse_completion
from tests.support.inference_server import tiny_engine, tiny_server

POLICY = {"kind": "static", "threshold": 0.1}
NAME = "tiny-static"
KEY = "test-key-h31"
PROMPT = "w1 w2 w3"


@pytest.fixture(scope="module")
def engine():
    return tiny_engine()


@pytest.fixture(scope="module")
def server(tmp_path_factory, engine):
    """``python -m inference serve`` on a free loopback port, with an API key; its base URL."""
    root = tmp_path_factory.mktemp("serve")
    with tiny_server(
        root, policy=POLICY, name=NAME, api_key=KEY, extra=("--queue", "2", "--max-tokens", "8")
    ) as url:
        yield url


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server, api_key=KEY, max_retries=0, timeout=300)


def test_models_lists_the_condition(client):
    (model,) = client.models.list().data
    assert model.id == NAME and model.model_extra["policy"] == POLICY


def test_chat_is_the_engines_reply_with_telemetry(client, engine):
    expected = generate(engine, PROMPT, Policy.from_json(POLICY), max_new_tokens=6)
    reply = client.chat.completions.create(
        model=NAME, messages=[{"role": "user", "content": PROMPT}], max_tokens=6, temperature=0
    )
    assert reply.choices[0].message.content == expected.text
    assert reply.choices[0].finish_reason == expected.finish_reason
    assert reply.usage.prompt_tokens == expected.prompt_tokens
    assert reply.usage.completion_tokens == expected.new_tokens
    telemetry = reply.model_extra["telemetry"]
    assert telemetry["achieved_sparsity"] == pytest.approx(expected.achieved_sparsity)
    assert telemetry["policy"] == POLICY and telemetry["new_tokens"] == expected.new_tokens
    assert telemetry["latency_s"] > 0


def test_streamed_chat_is_the_same_text(client):
    kwargs = {"model": NAME, "messages": [{"role": "user", "content": PROMPT}],
              "max_tokens": 6, "temperature": 0}  # fmt: skip
    whole = client.chat.completions.create(**kwargs).choices[0].message.content
    chunks = list(client.chat.completions.create(
        **kwargs, stream=True, stream_options={"include_usage": True}
    ))  # fmt: skip
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole and len([c for c in chunks if c.choices]) > 2
    finishing = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finishing) == 1 and "telemetry" in finishing[0].model_extra
    assert chunks[-1].usage.completion_tokens == finishing[0].model_extra["telemetry"]["new_tokens"]


def test_completion_is_the_raw_prompt_with_stop(client, engine):
    expected = generate(engine, PROMPT, Policy.from_json(POLICY), max_new_tokens=6, raw=True)
    reply = client.completions.create(model=NAME, prompt=PROMPT, max_tokens=6, temperature=0)
    assert reply.choices[0].text == expected.text
    stop = expected.text.split()[2]  # the third word: the reply stops before it
    cut = client.completions.create(
        model=NAME, prompt=PROMPT, max_tokens=6, temperature=0, stop=[stop]
    )
    assert cut.choices[0].text == expected.text[: expected.text.index(stop)]
    assert cut.choices[0].finish_reason == "stop"
    pieces = list(client.completions.create(
        model=NAME, prompt=PROMPT, max_tokens=6, temperature=0, stop=stop, stream=True
    ))  # fmt: skip
    assert "".join(p.choices[0].text for p in pieces) == cut.choices[0].text


def test_sampling_is_seeded(client):
    def sample(seed: int) -> str:
        return client.completions.create(
            model=NAME, prompt=PROMPT, max_tokens=8, temperature=1.0, seed=seed
        ).choices[0].text

    assert sample(1) == sample(1)
    assert len({sample(seed) for seed in range(4)}) > 1


def test_bad_requests_get_openai_errors(client, server):
    messages = [{"role": "user", "content": PROMPT}]
    with pytest.raises(openai.NotFoundError, match="not served here"):
        client.chat.completions.create(model="gpt-4", messages=messages)
    with pytest.raises(openai.BadRequestError, match="'n' must be 1"):
        client.chat.completions.create(model=NAME, messages=messages, n=2)
    with pytest.raises(openai.BadRequestError) as too_long:
        client.chat.completions.create(model=NAME, messages=messages, max_tokens=10_000)
    assert too_long.value.code == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError) as streamed_too_long:
        list(client.chat.completions.create(
            model=NAME, messages=messages, max_tokens=10_000, stream=True
        ))  # fmt: skip
    assert streamed_too_long.value.code == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError, match="role"):
        client.chat.completions.create(model=NAME, messages=[{"role": "robot", "content": "x"}])
    wrong_key = openai.OpenAI(base_url=server, api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong_key.models.list()
    with pytest.raises(openai.NotFoundError):
        client.get("/nothing-here", cast_to=object)


def test_parse_reads_the_api_fields():
    body = {"model": NAME, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}],
        "max_tokens": 5, "temperature": 0, "stop": "\n\n"}  # fmt: skip
    parsed = parse_chat(body, model_id=NAME, default_max_tokens=9)
    assert parsed.prompt == [{"role": "user", "content": "ab"}] and not parsed.raw
    assert (parsed.max_new_tokens, parsed.temperature, parsed.seed, parsed.stop) == (
        5, 0.0, 0, ("\n\n",)
    )
    completion = parse_completion({"model": NAME, "prompt": ["x"]}, model_id=NAME,
                                  default_max_tokens=9)  # fmt: skip
    assert completion.raw and completion.prompt == "x" and completion.max_new_tokens == 9
    assert 0 <= completion.seed < 2**31 and completion.temperature == 1.0  # the API's default
    for bad in ({"max_tokens": 0}, {"max_tokens": True}, {"temperature": 3}, {"seed": -1},
                {"stop": ["a", "b", "c", "d", "e"]}, {"stop": 3}, {"top_p": 0.5},
                {"logprobs": True}, {"stream": "yes"}):  # fmt: skip
        with pytest.raises(ApiError) as error:
            parse_completion({"model": NAME, "prompt": "x", **bad}, model_id=NAME,
                             default_max_tokens=9)  # fmt: skip
        assert error.value.status == 400 and error.value.param == next(iter(bad))
    with pytest.raises(ApiError, match="one non-empty text"):
        parse_completion({"model": NAME, "prompt": ["x", "y"]}, model_id=NAME,
                         default_max_tokens=9)  # fmt: skip


def test_slot_runs_one_and_refuses_past_the_queue():
    async def scenario() -> list:
        slot = Slot(queue_size=1)
        release = threading.Event()
        slot.admit()
        first = asyncio.create_task(slot.run(lambda: release.wait(30) and "first"))
        slot.admit()
        second = asyncio.create_task(slot.run(lambda: "second"))
        await asyncio.sleep(0)
        with pytest.raises(ApiError) as full:
            slot.admit()  # one decoding, one waiting: full
        assert full.value.status == 503 and full.value.code == "queue_full"
        assert not second.done()  # batch 1: waits for the first
        release.set()
        results = [await first, await second]
        slot.admit()  # room again
        return results

    assert asyncio.run(scenario()) == ["first", "second"]


def test_a_full_queue_is_a_503_over_http(tmp_path):
    """No queue (``--queue 0``): while one streamed generation decodes, the next request is
    refused at once with the API's 503 ``queue_full``; after it, there is room again. The
    first decodes long (the tiny model answers PROMPT greedily with 194 tokens before its
    EOS, seconds) and its first chunk says it has started."""
    with tiny_server(
        tmp_path, policy=POLICY, name=NAME, api_key=None, extra=("--queue", "0"), context=1024
    ) as url:
        busy = openai.OpenAI(base_url=url, api_key="none", max_retries=0, timeout=600)
        ask = {"model": NAME, "messages": [{"role": "user", "content": PROMPT}], "temperature": 0}
        stream = busy.chat.completions.create(**ask, max_tokens=600, stream=True)
        chunks = iter(stream)
        next(chunks)  # the first chunk: it is decoding now
        with pytest.raises(openai.APIStatusError) as refused:
            busy.chat.completions.create(**ask, max_tokens=1)
        assert refused.value.status_code == 503
        assert refused.value.body["code"] == "queue_full"
        assert "busy" in refused.value.body["message"]
        rest = [c for c in chunks if c.choices]
        assert rest[-1].choices[0].finish_reason == "stop"  # the first ran to its end
        assert rest[-1].model_extra["telemetry"]["new_tokens"] == 194
        assert busy.chat.completions.create(**ask, max_tokens=1).usage.completion_tokens == 1


def test_binding_beyond_loopback_needs_a_key():
    assert api_key_for("127.0.0.1", {}) is None and api_key_for("::1", {}) is None
    assert api_key_for("localhost", {"INFERENCE_API_KEY": "k"}) == "k"
    with pytest.raises(ValueError, match="INFERENCE_API_KEY"):
        api_key_for("0.0.0.0", {})
    assert api_key_for("0.0.0.0", {"INFERENCE_API_KEY": "k"}) == "k"
