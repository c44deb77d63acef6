"""Answers from a Python async generator, run inside the hub (``serve --generator module:function``).

    async def answer(request: ChatRequest) -> AsyncIterator[str | dict]:
        async for token in my_model(request.messages):
            yield token                                  # text
        yield {"type": "data-sources", "data": [...]}    # or any AI SDK UI message chunk

The runner writes the answer stream ``chat/<chat>/<answer>`` (label ``format=ui``: one UI message
chunk per chunk, see ``hub.protocols.aisdk.chunks``) through the hub's own append path with a
producer id and seq, batching whatever the generator yields while one append waits for its group
commit, so a fast generator is not held to one token per commit.

Invariants:

* Text is wrapped (``text-start`` / ``text-delta`` / ``text-end``) and a part the runner opened is
  ended before any other chunk; the runner writes ``start{messageId}`` first and never a terminal
  chunk: the close is the end (done, cancelled or error), and the adapters derive ``finish`` /
  ``error`` from it.
* Stop (``POST {prefix}/{chat}/stop``, the WebSocket transport's ``abort``, the native ``cancel``)
  cancels the task: ``CancelledError`` is raised at the generator's ``await`` (so an HTTP call to a
  model is dropped), and the answer closes ``cancelled`` with everything written so far.
* A generator that raises closes the answer ``error`` with a safe message: the text of a
  ``GeneratorError`` it raised on purpose, otherwise ``"the model failed"``; the exception itself
  goes to the hub's log only.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from hub.core.errors import HubError

log = logging.getLogger("hub.generator")


class GeneratorError(Exception):
    """Raise this from a generator to end the answer ``error`` with this message shown to users."""


@dataclass
class Message:
    role: str  # "user" | "assistant"
    content: str


@dataclass
class ChatRequest:
    chat: str
    answer: str  # the stream the answer goes to
    messages: list[Message]  # the conversation from the hub's own chat, ending with the new user text
    trigger: str = "submit-message"
    body: dict[str, Any] = field(default_factory=dict)  # the request's extra body fields
    ui_messages: list[Any] = field(default_factory=list)  # what the client sent, unvalidated


Generator = Callable[[ChatRequest], AsyncIterator[str | dict[str, Any]]]


def load(spec: str) -> Generator:
    """``package.module:function`` -> the function (a clear error for a bad spec)."""
    mod, sep, name = spec.partition(":")
    if not sep or not mod or not name:
        raise ValueError(f"--generator wants module:function, not {spec!r}")
    fn = getattr(importlib.import_module(mod), name, None)
    if not callable(fn):
        raise ValueError(f"{spec!r}: {name} is not a function of {mod}")
    return fn


_enc = msgspec.json.Encoder()


class UiChunks:
    """Turns what a generator yields into UI message chunks (dicts). No I/O."""

    def __init__(self, message_id: str) -> None:
        self.message_id = message_id
        self.text_open: str | None = None
        self.n = 0

    def start(self) -> list[dict[str, Any]]:
        return [{"type": "start", "messageId": self.message_id}]

    def item(self, x: str | dict[str, Any]) -> list[dict[str, Any]]:
        if isinstance(x, str):
            if not x:
                return []
            out = []
            if self.text_open is None:
                self.n += 1
                self.text_open = f"text-{self.n}"
                out.append({"type": "text-start", "id": self.text_open})
            out.append({"type": "text-delta", "id": self.text_open, "delta": x})
            return out
        if not isinstance(x, dict) or not isinstance(x.get("type"), str):
            raise TypeError(f"a generator yields str or a UI message chunk dict, not {type(x).__name__}")
        if x["type"] in ("finish", "error", "abort"):
            return []  # the close is the end; the adapters write the terminal chunk
        out = self.end_text() if not x["type"].startswith("text-") else []
        return [*out, x]

    def end_text(self) -> list[dict[str, Any]]:
        if self.text_open is None:
            return []
        tid, self.text_open = self.text_open, None
        return [{"type": "text-end", "id": tid}]


class InProcessWriter:
    """Appends to one stream from inside the hub, batching while an append is in flight."""

    def __init__(self, append: Callable[..., Any], stream: str) -> None:
        self.append = append
        self.stream = stream
        self.producer = "gen-" + uuid.uuid4().hex
        self.seq = 0
        self.buf: list[bytes] = []
        self.ready = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.failed: BaseException | None = None

    def put(self, chunks: list[dict[str, Any]]) -> None:
        if self.failed is not None:
            raise self.failed
        self.buf += [_enc.encode(c) for c in chunks]
        if self.buf:
            self.ready.set()
            if self.task is None:
                self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while self.buf:
            batch, self.buf = self.buf, []
            self.seq += 1
            try:
                await self.append(self.stream, batch, self.producer, self.seq)
            except BaseException as e:
                self.failed = e
                return
        self.task = None

    async def drain(self) -> None:
        while self.task is not None:
            await asyncio.shield(self.task)
        if self.failed is not None:
            raise self.failed


class Runner:
    """One answer, from the generator's first chunk to the stream's close.

    ``stop()`` cancels only the generator (an inner task), never the writing of what it already
    yielded or the close, so a Stop keeps the partial answer."""

    def __init__(
        self,
        gen: Generator,
        request: ChatRequest,
        message_id: str,
        append: Callable[..., Any],
        close: Callable[[str, str, str | None], Any],
    ) -> None:
        self.gen, self.request, self.close = gen, request, close
        self.writer = InProcessWriter(append, request.answer)
        self.ui = UiChunks(message_id)
        self.inner: asyncio.Task[None] | None = None
        self.stopped = False

    def stop(self, _stream: str | None = None) -> None:
        self.stopped = True
        if self.inner is not None:
            self.inner.cancel()

    async def _consume(self) -> None:
        w, ui = self.writer, self.ui
        w.put(ui.start())
        async for x in self.gen(self.request):
            w.put(ui.item(x))
            if len(w.buf) >= 256:
                await asyncio.sleep(0)  # a generator that never awaits still lets the writer run
        w.put(ui.end_text())

    async def run(self) -> str:
        """Returns the status the answer closed with."""
        status, error = "done", None
        self.inner = asyncio.create_task(self._consume())
        if self.stopped:
            self.inner.cancel()
        try:
            await asyncio.shield(self.inner)
            if self.stopped:
                status = "cancelled"  # the generator swallowed its CancelledError
        except asyncio.CancelledError:
            if not self.inner.cancelled():
                self.inner.cancel()  # the runner itself was cancelled (hub shutdown)
                raise
            status = "cancelled"
            with contextlib.suppress(Exception):
                self.writer.put(self.ui.end_text())
        except GeneratorError as e:
            status, error = "error", str(e)[:500] or "the model failed"
        except HubError as e:
            status, error = "error", f"the answer could not be stored: {e.code}"
        except Exception:
            log.exception("generator failed for %s", self.request.answer)
            status, error = "error", "the model failed"
        try:
            await self.writer.drain()
        except HubError as e:
            if e.code == "stream_closed":
                return "closed"
            status, error = "error", f"the answer could not be stored: {e.code}"
        with contextlib.suppress(HubError):
            await self.close(self.request.answer, status, error)
        return status
