"""How an answer's chunks become AI SDK UI message chunks (``uiMessageChunkSchema``). No I/O.

An answer is a stream ``chat/<chat>/<answer>``; its ``format`` label says what its chunks are:

* ``ui``: each chunk is one UI message chunk as JSON (what ``hub.producers.generator`` and the
  OpenAI / Anthropic adapters write: ``text-*``, ``reasoning-*``, ``tool-*``, ``data-*`` ...). They
  pass through verbatim; the producer never writes the terminal chunk.
* anything else (the plain ``Producer``, the demo): plain text; the adapter wraps it as
  ``start{messageId}``, ``text-start``, one ``text-delta`` per chunk, ``text-end``.

Either way the adapter adds ``start`` (ui answers start with it only if the producer wrote it, so
the runner does) and derives the terminal chunk from the stream's close, the one durable event
that means both "ended" and "saved": ``done`` -> ``finish``, ``cancelled`` -> ``finish`` with
``finishReason: "stop"`` after the kept partial, ``error`` -> ``error{errorText}``.

Invariant: the translation is a pure function of (chunk offset, chunk, close), never of what
was sent before, so a replay from offset 0 (the AI SDK's resume contract) and a live tail
produce the same UI chunks, each exactly once, and ``sequence`` (the WebSocket transport's
counter) is the chunk's position in that list: ``offset + lead(format)``.
"""

from __future__ import annotations

from typing import Any

import msgspec

from storage import CloseInfo

TEXT_ID = "text-0"
_enc = msgspec.json.Encoder()


def is_ui(labels: dict[str, str]) -> bool:
    return labels.get("format") == "ui"


def message_id(stream_id: str) -> str:
    """The assistant message's id: the answer's name, the same on every replay."""
    return "msg-" + stream_id.rsplit("/", 1)[-1]


class Translator:
    """One answer's chunks as UI message chunks (JSON text), each with its ``sequence``."""

    def __init__(self, stream_id: str, labels: dict[str, str]) -> None:
        self.stream_id = stream_id
        self.ui = is_ui(labels)
        self.lead = 0 if self.ui else 2  # chunks the adapter emits before the answer's first chunk

    def head(self) -> list[str]:
        if self.ui:
            return []
        start = _enc.encode({"type": "start", "messageId": message_id(self.stream_id)}).decode()
        return [start, _enc.encode({"type": "text-start", "id": TEXT_ID}).decode()]

    def chunks(self, offset: int, data: list[str]) -> list[tuple[int, str]]:
        """(sequence, UI chunk JSON) for the answer's chunks from ``offset``."""
        out: list[tuple[int, str]] = []
        if offset == 0:
            out += list(enumerate(self.head()))
        if self.ui:
            out += [(offset + i, d) for i, d in enumerate(data)]
        else:
            for i, d in enumerate(data):
                body = _enc.encode({"type": "text-delta", "id": TEXT_ID, "delta": d}).decode()
                out.append((self.lead + offset + i, body))
        return out

    def end(self, offset: int, info: CloseInfo | None) -> list[tuple[int, str]]:
        """The chunks after the answer's last one (``offset`` = its chunk count)."""
        out: list[tuple[int, str]] = []
        if offset == 0:
            out += list(enumerate(self.head()))
        tail: list[dict[str, Any]] = []
        if not self.ui:
            tail.append({"type": "text-end", "id": TEXT_ID})
        status = info.status if info else "error"
        if status == "error":
            tail.append({"type": "error", "errorText": (info.error if info else None) or "the answer failed"})
        else:
            tail.append({"type": "finish", "finishReason": "stop"})
        first = self.lead + offset
        out += [(first + i, _enc.encode(c).decode()) for i, c in enumerate(tail)]
        return out

    def error(self, message: str) -> str:
        return _enc.encode({"type": "error", "errorText": message}).decode()


def sse(chunks: list[tuple[int, str]]) -> str:
    """``data: {json}\\n\\n`` per chunk (the AI SDK's ``JsonToSseTransformStream``)."""
    return "".join(f"data: {c}\n\n" for _, c in chunks)


SSE_DONE = "data: [DONE]\n\n"
SSE_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    "Connection": "keep-alive",
    "X-Vercel-AI-UI-Message-Stream": "v1",
    "X-Accel-Buffering": "no",
}
