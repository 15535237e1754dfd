"""An OpenAI-compatible HTTP server for one condition: ``python -m inference serve``.

An adapter, like the Django views: parse a request, call the engine's ``generate``, render the
answer in the OpenAI API's shapes (field names exactly as the API has them, so the official
client and the harnesses built on it -- lm-evaluation-harness, evalplus, Arena-Hard-Auto, our
LLM judge -- work unchanged). One generation decodes at a time (batch 1, as the study
measures); at most ``queue_size`` more wait, in order, and any beyond get a 503 at once. Each
response carries the generation's telemetry in an extra field, ``telemetry``. docs/engine.md.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from inference.generate import GenerationResult, generate
from inference.loading import LoadedModel
from inference.model_info import PromptTooLong
from inference.policies import Policy

API_KEY_ENV = "INFERENCE_API_KEY"
MAX_STOP_TEXTS = 4  # as the OpenAI API allows
ROLES = ("system", "user", "assistant")


class ApiError(Exception):
    """A request we refuse, rendered as the OpenAI API's error object with ``status``."""

    def __init__(
        self, status: int, message: str, *, param: str | None = None, code: str | None = None,
        type: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = (
            status, message, param, code, type,
        )

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param,
                          "code": self.code}}  # fmt: skip

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status)


@dataclass(frozen=True)
class GenerationRequest:
    """What a completion request asks of the engine, validated."""

    prompt: str | list[dict]  # text (a raw prompt) or chat messages
    raw: bool  # /v1/completions: the text without the chat template
    max_new_tokens: int
    temperature: float
    seed: int
    stop: tuple[str, ...]
    stream: bool
    include_usage: bool  # stream_options.include_usage: a last chunk with the token counts


def parse_chat(body: dict, *, model_id: str, default_max_tokens: int) -> GenerationRequest:
    """A ``/v1/chat/completions`` body -> ``GenerationRequest``; raises ``ApiError`` (400)."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "'messages' must be a non-empty list of messages", param="messages")
    parsed = [_message(m, i) for i, m in enumerate(messages)]
    return _request(body, parsed, raw=False, model_id=model_id, max_tokens=default_max_tokens)


def parse_completion(body: dict, *, model_id: str, default_max_tokens: int) -> GenerationRequest:
    """A ``/v1/completions`` body -> ``GenerationRequest``; raises ``ApiError`` (400)."""
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]  # a batch of one
    if not isinstance(prompt, str) or not prompt:
        raise ApiError(
            400, "'prompt' must be one non-empty text (batches and token ids are not served: "
            "one request decodes at a time)", param="prompt",
        )
    for name in ("echo", "suffix"):
        if body.get(name):
            raise ApiError(400, f"'{name}' is not supported", param=name)
    if body.get("best_of", 1) != 1:
        raise ApiError(400, "'best_of' must be 1", param="best_of")
    return _request(body, prompt, raw=True, model_id=model_id, max_tokens=default_max_tokens)


def _message(message: object, index: int) -> dict:
    param = f"messages[{index}]"
    if not isinstance(message, dict) or message.get("role") not in ROLES:
        raise ApiError(400, f"{param} needs a 'role', one of {', '.join(ROLES)}", param=param)
    content = message.get("content")
    if isinstance(content, list):  # content parts: only text is served
        if not all(isinstance(p, dict) and p.get("type") == "text" for p in content):
            raise ApiError(400, f"{param}: only text content parts are supported", param=param)
        content = "".join(str(p.get("text", "")) for p in content)
    if not isinstance(content, str):
        raise ApiError(400, f"{param} needs a text 'content'", param=f"{param}.content")
    return {"role": message["role"], "content": content}


def _request(
    body: dict, prompt: str | list[dict], *, raw: bool, model_id: str, max_tokens: int
) -> GenerationRequest:
    if body.get("model") != model_id:
        raise ApiError(
            404, f"the model {body.get('model')!r} is not served here; this server serves "
            f"{model_id!r} (GET /v1/models)", param="model", code="model_not_found",
        )
    asked = body.get("max_completion_tokens", body.get("max_tokens"))
    max_tokens = max_tokens if asked is None else asked
    _integer(max_tokens, "max_tokens", minimum=1)
    temperature = body.get("temperature", 1.0)
    if temperature is None:
        temperature = 1.0
    if isinstance(temperature, bool) or not isinstance(temperature, int | float) or not (
        0.0 <= temperature <= 2.0
    ):
        raise ApiError(400, "'temperature' must be a number from 0 to 2", param="temperature")
    seed = body.get("seed")
    if seed is None:  # sampling without a seed differs each time, as the API's does
        seed = secrets.randbelow(2**31) if temperature > 0 else 0
    _integer(seed, "seed", minimum=0)
    for name, allowed in (("n", 1), ("top_p", 1)):
        if body.get(name) not in (None, allowed):
            raise ApiError(400, f"'{name}' must be {allowed}: the engine serves exactly that",
                           param=name)  # fmt: skip
    for name in ("logprobs", "top_logprobs", "tools", "functions", "logit_bias"):
        if body.get(name):
            raise ApiError(400, f"'{name}' is not supported", param=name)
    stream = body.get("stream") or False
    if not isinstance(stream, bool):
        raise ApiError(400, "'stream' must be true or false", param="stream")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise ApiError(400, "'stream_options' must be an object", param="stream_options")
    return GenerationRequest(
        prompt=prompt, raw=raw, max_new_tokens=max_tokens, temperature=float(temperature),
        seed=seed, stop=_stop(body.get("stop")), stream=stream,
        include_usage=bool(options.get("include_usage")),
    )


def _integer(value: object, name: str, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ApiError(400, f"'{name}' must be an integer >= {minimum}", param=name)


def _stop(value: object) -> tuple[str, ...]:
    stop = [value] if isinstance(value, str) else (value or [])
    if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
        raise ApiError(400, "'stop' must be a text or a list of texts", param="stop")
    if len(stop) > MAX_STOP_TEXTS:
        raise ApiError(400, f"'stop' takes at most {MAX_STOP_TEXTS} texts", param="stop")
    return tuple(s for s in stop if s)


class Condition:
    """The served condition: a loaded model, its policy and the name clients ask for."""

    def __init__(self, loaded: LoadedModel, policy: Policy, model_id: str) -> None:
        self.loaded, self.policy, self.model_id = loaded, policy, model_id

    def generate(
        self, request: GenerationRequest, on_text: Callable[[str], None] | None = None
    ) -> GenerationResult:
        return generate(
            self.loaded, request.prompt, self.policy, max_new_tokens=request.max_new_tokens,
            seed=request.seed, temperature=request.temperature, on_text=on_text,
            stop=request.stop, raw=request.raw,
        )

    def telemetry(self, result: GenerationResult, request: GenerationRequest) -> dict:
        """The extra ``telemetry`` field: the generation's measurements and what made it."""
        fields = result.to_dict()
        del fields["text"], fields["token_ids"]
        return {**fields, "seed": request.seed, "policy": self.policy.to_dict(),
                "model_fingerprint": self.loaded.fingerprint}  # fmt: skip


class Slot:
    """Batch 1: one generation runs; at most ``queue_size`` admitted requests wait (FIFO)."""

    def __init__(self, queue_size: int) -> None:
        self.queue_size = queue_size
        self._lock = asyncio.Lock()
        self._admitted = 0  # running + waiting

    def admit(self) -> None:
        """Count a request in, or raise a 503 ``ApiError`` when the queue is full."""
        if self._admitted >= 1 + self.queue_size:
            raise ApiError(
                503, f"the server is busy: one generation is decoding and {self.queue_size} "
                "more are waiting (batch 1); retry later", type="server_error",
                code="queue_full",
            )
        self._admitted += 1

    async def run(self, work: Callable[[], GenerationResult]) -> GenerationResult:
        """Run ``work`` in a thread once the generation before it ends (after ``admit``)."""
        try:
            async with self._lock:  # held until the thread ends, even if the client left
                return await anyio.to_thread.run_sync(work)
        finally:
            self._admitted -= 1


def build_app(
    condition: Condition, *, api_key: str | None, queue_size: int = 8,
    default_max_tokens: int = 256,
) -> Starlette:
    """The ASGI app serving ``condition``; ``api_key``: required as a Bearer token when set."""
    slot = Slot(queue_size)
    running: set[asyncio.Task] = set()  # the event loop keeps only weak references

    def authorize(request: Request) -> None:
        if api_key is None:
            return
        given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if not secrets.compare_digest(given.encode(), api_key.encode()):
            raise ApiError(401, "missing or wrong API key (Authorization: Bearer ...)",
                           code="invalid_api_key")  # fmt: skip

    async def json_body(request: Request) -> dict:
        try:
            body = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ApiError(400, f"the body is not valid JSON: {exc}") from exc
        if not isinstance(body, dict):
            raise ApiError(400, "the body must be a JSON object")
        return body

    async def models(request: Request) -> Response:
        authorize(request)
        return JSONResponse({"object": "list", "data": [_model_entry(condition)]})

    async def complete(request: Request, parse, render: Renderer) -> Response:
        authorize(request)
        parsed = parse(
            await json_body(request), model_id=condition.model_id,
            default_max_tokens=default_max_tokens,
        )
        slot.admit()
        if not parsed.stream:
            result = await _run(slot, condition, parsed, None)
            return JSONResponse(render.whole(result, condition.telemetry(result, parsed)))
        pieces: asyncio.Queue = asyncio.Queue()
        loop = asyncio.get_running_loop()
        task = asyncio.create_task(
            slot.run(lambda: condition.generate(
                parsed, lambda piece: loop.call_soon_threadsafe(pieces.put_nowait, piece)
            ))
        )
        running.add(task)
        task.add_done_callback(running.discard)
        task.add_done_callback(lambda _: loop.call_soon_threadsafe(pieces.put_nowait, None))
        first = await pieces.get()  # the first text, or the end: errors come before headers
        if first is None and task.exception() is not None:
            return _error_of(task.exception()).response()
        return StreamingResponse(
            _events(render, parsed, condition, task, first, pieces),
            media_type="text/event-stream", headers={"Cache-Control": "no-cache"},
        )

    async def chat(request: Request) -> Response:
        return await complete(request, parse_chat, Renderer("chat.completion", condition))

    async def completions(request: Request) -> Response:
        return await complete(request, parse_completion, Renderer("text_completion", condition))

    async def api_error(request: Request, exc: ApiError) -> Response:
        return exc.response()

    async def http_error(request: Request, exc: HTTPException) -> Response:
        return ApiError(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}",
                        code=None).response()  # fmt: skip

    return Starlette(
        routes=[
            Route("/v1/models", models, methods=["GET"]),
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/v1/completions", completions, methods=["POST"]),
        ],
        exception_handlers={ApiError: api_error, HTTPException: http_error},
    )


async def _run(slot: Slot, condition: Condition, request: GenerationRequest, on_text):
    try:
        return await slot.run(lambda: condition.generate(request, on_text))
    except Exception as exc:  # rendered as the API's error object, never a bare traceback
        raise _error_of(exc) from exc


def _error_of(exc: BaseException) -> ApiError:
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, PromptTooLong):
        return ApiError(400, str(exc), param="messages", code="context_length_exceeded")
    if isinstance(exc, ValueError):
        return ApiError(400, str(exc))
    return ApiError(500, f"the generation failed: {exc!r}", type="server_error")


async def _events(
    render: Renderer, request: GenerationRequest, condition: Condition, task: asyncio.Task,
    first: str | None, pieces: asyncio.Queue,
) -> AsyncIterator[str]:
    """Server-sent events: the role, each piece of text, the end with the telemetry, [DONE]."""
    yield _event(render.chunk(role=True))
    piece = first
    while piece is not None:
        yield _event(render.chunk(text=piece))
        piece = await pieces.get()
    if task.exception() is not None:  # after the first text: the stream says so and ends
        yield _event(_error_of(task.exception()).body())
        return
    result = task.result()
    yield _event(render.chunk(finish=result, telemetry=condition.telemetry(result, request)))
    if request.include_usage:
        yield _event({**render.chunk(), "choices": [], "usage": _usage(result)})
    yield "data: [DONE]\n\n"


def _event(data: dict) -> str:
    return f"data: {json.dumps(data)}\n\n"


def _usage(result: GenerationResult) -> dict:
    return {"prompt_tokens": result.prompt_tokens, "completion_tokens": result.new_tokens,
            "total_tokens": result.prompt_tokens + result.new_tokens}  # fmt: skip


def _model_entry(condition: Condition) -> dict:
    return {"id": condition.model_id, "object": "model", "created": 0, "owned_by": "local",
            "policy": condition.policy.to_dict(),
            "model_fingerprint": condition.loaded.fingerprint}  # fmt: skip


class Renderer:
    """The API's shapes for one response: ``chat.completion`` or ``text_completion``."""

    def __init__(self, kind: str, condition: Condition) -> None:
        self.kind, self.model_id = kind, condition.model_id
        prefix = "chatcmpl" if kind == "chat.completion" else "cmpl"
        self.id = f"{prefix}-{secrets.token_hex(12)}"
        self.created = int(time.time())

    def _head(self, object_name: str) -> dict:
        return {"id": self.id, "object": object_name, "created": self.created,
                "model": self.model_id}  # fmt: skip

    def whole(self, result: GenerationResult, telemetry: dict) -> dict:
        if self.kind == "chat.completion":
            choice = {"index": 0, "message": {"role": "assistant", "content": result.text},
                      "finish_reason": result.finish_reason, "logprobs": None}  # fmt: skip
        else:
            choice = {"index": 0, "text": result.text, "finish_reason": result.finish_reason,
                      "logprobs": None}  # fmt: skip
        return {**self._head(self.kind), "choices": [choice], "usage": _usage(result),
                "telemetry": telemetry}  # fmt: skip

    def chunk(
        self, *, role: bool = False, text: str | None = None,
        finish: GenerationResult | None = None, telemetry: dict | None = None,
    ) -> dict:
        finish_reason = finish.finish_reason if finish is not None else None
        if self.kind == "chat.completion":
            delta = {"role": "assistant", "content": ""} if role else {}
            if text is not None:
                delta["content"] = text
            choice = {"index": 0, "delta": delta, "finish_reason": finish_reason,
                      "logprobs": None}  # fmt: skip
            head = self._head("chat.completion.chunk")
        else:
            choice = {"index": 0, "text": text or "", "finish_reason": finish_reason,
                      "logprobs": None}  # fmt: skip
            head = self._head("text_completion")
        chunk = {**head, "choices": [choice]}
        if telemetry is not None:
            chunk["telemetry"] = telemetry
        return chunk


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) is reachable only from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def api_key_for(host: str, environ: dict) -> str | None:
    """The API key from ``INFERENCE_API_KEY`` (None: none needed); raises ``ValueError`` when
    ``host`` is not loopback and no key is set: a condition is never open to the network."""
    key = environ.get(API_KEY_ENV) or None
    if key is None and not is_loopback(host):
        raise ValueError(
            f"--host {host} is reachable from other machines: set {API_KEY_ENV} to an API key "
            "that clients must send (Authorization: Bearer ...), or serve on 127.0.0.1"
        )
    return key
