"""Plain HTTP: the producer API, the JSON read API and Server-Sent Events.

PUT    /streams/{id}            create (idempotent: 201 created, 200 already there)
POST   /streams/{id}            append: JSON {"data": str | [str]} or a text/plain body
                                (Producer-Id + Producer-Seq headers make retries idempotent)
POST   /streams/{id}/close      {"status": "done"|"error"|"cancelled", "error": str?}
POST   /streams/{id}/cancel     ask the producer to stop
GET    /streams/{id}?from=N     JSON chunks from N (limit=M), with status and next offset
GET    /streams/{id}/sse        SSE from ``from`` or ``Last-Event-ID``; each event's id is the
                                offset after it, so a plain EventSource resumes by itself
DELETE /streams/{id}
GET    /streams?prefix=P        ids
"""

from __future__ import annotations

from typing import Any, cast, get_args

import msgspec
from aiohttp import web

from hub.core.auth import bearer
from hub.core.errors import HubError
from hub.core.fanout import Format, texts
from hub.core.positions import MAX_OFFSET, parse_uint
from hub.core.service import HUB, Hub
from hub.protocols.native.messages import NOTHING_TO_APPEND
from hub.protocols.sse import pump as sse_pump
from storage import CloseInfo, CloseStatus

routes = web.RouteTableDef()


class AppendBody(msgspec.Struct, forbid_unknown_fields=True):
    data: str | list[str]


class CloseBody(msgspec.Struct, forbid_unknown_fields=True):
    status: str = "done"  # a status we do not know is bad_request, as over WebSocket
    error: str | None = None


class CreateBody(msgspec.Struct, forbid_unknown_fields=True):
    # UNSET, not a default: a repeated PUT must differ only in what it actually says (then 409)
    ttl: float | None | msgspec.UnsetType = msgspec.UNSET
    labels: dict[str, str] | msgspec.UnsetType = msgspec.UNSET


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=msgspec.json.encode(data), status=status, content_type="application/json")


def _int(raw: str | None, name: str, default: int | None = None) -> int:
    if raw is None or raw == "":
        if default is None:
            raise HubError("bad_request", f"{name} is required")
        return default
    return parse_uint(raw, name, "invalid_offset" if name in ("from", "Last-Event-ID") else "bad_request")


async def _body(request: web.Request, typ: type[Any]) -> Any:
    raw = await request.read()
    if not raw:
        return typ()
    try:
        return msgspec.json.decode(raw, type=typ)
    except msgspec.ValidationError as e:  # wrong field types, unknown fields: as over WebSocket
        raise HubError("malformed_frame", f"invalid body: {e}") from None
    except msgspec.DecodeError as e:
        raise HubError("malformed_frame", f"body is not valid JSON: {e}") from None


def _ctx(request: web.Request, action: str) -> tuple[Hub, str]:
    hub = request.app[HUB]
    sid = request.match_info["id"]
    hub.auth.grant(bearer(request)).check(action, sid)
    return hub, sid


@routes.put("/streams/{id:.+}")
async def create(request: web.Request) -> web.Response:
    hub, sid = _ctx(request, "write")
    body = await _body(request, CreateBody)
    ttl = body.ttl if body.ttl is not msgspec.UNSET else None
    labels = body.labels if body.labels is not msgspec.UNSET else {}
    if ttl is not None and not ttl >= 0:
        raise HubError("bad_request", "ttl must be a number of seconds >= 0", stream=sid)
    existed = await hub.exists(sid)
    s = await hub.create(sid, ttl=ttl, labels=labels, exist_ok=True)
    if existed:  # idempotent only for the same settings, as the Durable Streams PUT
        differs = [
            name
            for name, asked, has in (("ttl", body.ttl, s.meta.ttl), ("labels", body.labels, s.meta.labels))
            if asked is not msgspec.UNSET and asked != has
        ]
        if differs:
            raise HubError(
                "stream_exists", f"stream {sid!r} exists with other {' and '.join(differs)}", stream=sid
            )
    return _json(
        {"stream": sid, "next": s.next_offset, "status": s.status, "epoch": s.epoch},
        200 if existed else 201,
    )


@routes.post("/streams/{id:.+}/close")
async def close(request: web.Request) -> web.Response:
    hub, sid = _ctx(request, "write")
    body = await _body(request, CloseBody)
    if body.status not in get_args(CloseStatus):
        raise HubError("bad_request", "status must be done, error or cancelled", sid)
    s = await hub.close(sid, cast(CloseStatus, body.status), body.error)
    return _json({"stream": sid, "next": s.next_offset, "status": s.status})


class ForkBody(msgspec.Struct, forbid_unknown_fields=True):
    stream: str  # the new stream's id
    upto: int | None = None  # how many of the source's chunks it starts with (default: all)
    labels: dict[str, str] = {}


@routes.post("/streams/{id:.+}/fork")
async def fork(request: web.Request) -> web.Response:
    """Branch a stream ("regenerate from here"): the new stream starts as the source's first
    ``upto`` chunks, sharing the source's sealed segments on disk instead of copying them."""
    hub, src = _ctx(request, "read")
    body = await _body(request, ForkBody)
    hub.auth.grant(bearer(request)).check("write", body.stream)
    if body.upto is not None and not 0 <= body.upto <= MAX_OFFSET:
        raise HubError("invalid_offset", f"upto must be between 0 and {MAX_OFFSET}", stream=src)
    s = await hub.fork(src, body.stream, body.upto, body.labels)
    shared = s.info().shared_segments
    return _json(
        {"stream": body.stream, "next": s.next_offset, "forked_from": src, "shared_segments": shared}, 201
    )


@routes.post("/streams/{id:.+}/cancel")
async def cancel(request: web.Request) -> web.Response:
    hub, sid = _ctx(request, "cancel")
    told = await hub.cancel(sid)
    return _json({"stream": sid, "cancel_requested": True, "producer_notified": told}, 202)


@routes.post("/streams/{id:.+}/heartbeat")
async def heartbeat(request: web.Request) -> web.Response:
    """An HTTP producer renews its lease without appending (a model still thinking)."""
    hub, sid = _ctx(request, "write")
    s = await hub.get(sid)
    if s.ended:
        raise HubError("stream_closed", f"stream {sid!r} is closed ({s.status})", sid)
    hub.heartbeat(s)
    return _json({"stream": sid, "status": s.status, "lease_s": hub.config.producer_lease_s})


@routes.post("/streams/{id:.+}")
async def append(request: web.Request) -> web.Response:
    hub, sid = _ctx(request, "write")
    if request.content_type == "application/json":
        body = await _body(request, AppendBody)
        if body.data in ("", []):
            raise HubError("bad_request", NOTHING_TO_APPEND, stream=sid)
        data = [body.data] if isinstance(body.data, str) else body.data
        chunks = [d.encode() for d in data]
    elif request.content_type == "text/plain" and "Content-Type" in request.headers:
        raw = await request.read()
        try:
            raw.decode()
        except UnicodeDecodeError:
            raise HubError("bad_request", "a text/plain body must be UTF-8", stream=sid) from None
        if not raw:
            raise HubError("bad_request", NOTHING_TO_APPEND, stream=sid)
        chunks = [raw]
    else:
        # curl -d sends application/x-www-form-urlencoded: storing "data=..." as a chunk would be
        # a silent surprise, so only the two documented bodies are taken.
        await request.read()  # drain it, so the connection stays usable
        got = request.headers.get("Content-Type", "none")
        raise HubError(
            "unsupported_media_type",
            f'Content-Type {got!r}: send application/json {{"data": ...}} or a text/plain chunk',
            stream=sid,
        )
    pid = request.headers.get("Producer-Id")
    raw_seq = request.headers.get("Producer-Seq")
    if (pid is None) != (raw_seq is None):
        raise HubError(
            "bad_request", "Producer-Id and Producer-Seq go together: send both or neither", stream=sid
        )
    seq = _int(raw_seq, "Producer-Seq") if pid else None
    create = request.query.get("create") in ("1", "true")
    res = await hub.append(sid, chunks, pid, seq, create=create)
    return _json(
        {
            "stream": sid,
            "offset": res.offset,
            "count": res.count,
            "duplicate": res.duplicate,
            "cancelled": sid in hub.cancel_requested,
        }
    )


@routes.get("/streams/{id:.+}/sse")
async def sse(request: web.Request) -> web.StreamResponse:
    hub, sid = _ctx(request, "read")
    s = await hub.get(sid)
    last = request.headers.get("Last-Event-ID")
    got_end = False
    if last:
        # the end event's id is "<offset>:end": a reader that saw it is done; one that saw only
        # the last chunks ("<offset>") reconnects and still gets the end (issue 11)
        got_end = last.endswith(END_ID_SUFFIX)
        offset = _int(last.removesuffix(END_ID_SUFFIX), "Last-Event-ID")
    elif request.query.get("from") == "now":  # live only: from the current end on
        offset = s.next_offset
    else:
        offset = _int(request.query.get("from"), "from", 0)
    if offset > s.next_offset:
        raise HubError("offset_out_of_range", f"offset {offset} is past the end ({s.next_offset})", sid)
    if got_end and s.ended and offset >= s.next_offset:
        return web.Response(status=204)  # EventSource stops reconnecting on 204
    if request.method == "HEAD":  # aiohttp routes HEAD to GET handlers: headers only, never an event body
        return web.Response(
            status=200, headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
    resp = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    await resp.prepare(request)
    await sse_pump(resp, hub, s, offset, SSE_FORMAT)
    return resp


END_ID_SUFFIX = ":end"  # the end event's id: "<offset>:end", distinct from the last chunks' "<offset>"


class SseFormat(Format):
    transport = "sse"

    def chunks(self, stream: str, offset: int, data: list[bytes]) -> str:
        body = msgspec.json.encode({"offset": offset, "data": texts(data)}).decode()
        return f"id: {offset + len(data)}\ndata: {body}\n\n"

    def end(self, stream: str, offset: int, info: CloseInfo) -> str:
        body = msgspec.json.encode({"offset": offset, "status": info.status, "error": info.error}).decode()
        return f"id: {offset}{END_ID_SUFFIX}\nevent: end\ndata: {body}\n\n"

    def error(self, stream: str, code: str, message: str) -> str:
        body = msgspec.json.encode({"code": code, "message": message}).decode()
        return f"event: stream-error\ndata: {body}\n\n"


SSE_FORMAT = SseFormat()


@routes.get("/streams/{id:.+}")
async def read(request: web.Request) -> web.Response:
    hub, sid = _ctx(request, "read")
    s = await hub.get(sid)
    offset = _int(request.query.get("from"), "from", 0)
    limit = min(_int(request.query.get("limit"), "limit", 1000), 10000)
    if offset > s.next_offset:
        raise HubError("offset_out_of_range", f"offset {offset} is past the end ({s.next_offset})", sid)
    chunks = await hub.read(s, offset, limit, transport="http")
    ci = s.close_info
    return _json(
        {
            "stream": sid,
            "offset": offset,
            "chunks": [c.decode("utf-8", "replace") for c in chunks],
            "next": offset + len(chunks),
            "end": s.next_offset,
            "status": s.status,
            "error": ci.error if ci else None,
            "epoch": s.epoch,
        }
    )


@routes.delete("/streams/{id:.+}")
async def delete(request: web.Request) -> web.Response:
    hub, sid = _ctx(request, "write")
    await hub.delete(sid)
    return web.Response(status=204)


@routes.get("/streams")
async def list_streams(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    prefix = request.query.get("prefix", "")
    grant = hub.auth.grant(bearer(request))
    ids = [i for i in await hub.list_streams(prefix) if grant.can("read", i)]
    return _json({"streams": ids[:10000]})
