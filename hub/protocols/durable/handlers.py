"""Durable Streams HTTP handlers under ``/v1/stream/{path}``: they parse with ``wire``, act on the
hub's storage, and answer status + headers; protocol errors become JSON bodies in ``_endpoint``."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from aiohttp import web

from hub.core.auth import bearer
from hub.core.errors import STATUS, HubError
from hub.core.service import HUB, Hub
from hub.protocols.durable.forks import ForkPlan, fork_offset, fork_plan, on_delete
from hub.protocols.durable.state import DS, Durable, DurableConfig
from hub.protocols.durable.wire import (
    ALLOW_HEADERS,
    DEFAULT_TYPE,
    EXPOSE,
    FORK_OFFSET,
    FORK_SUB,
    FORKED_FROM,
    PENDING,
    PREFIX,
    SOFT_DELETED,
    UNTYPED,
    CreateRequest,
    DSError,
    ProducerHeaders,
    check_producer,
    cursor,
    essence,
    flag,
    format_expires,
    format_offset,
    format_ttl,
    is_json,
    is_text,
    json_messages,
    parse_offset,
    producer_headers,
    render,
    sse_control,
    sse_data,
)
from storage import (
    ChunkTooLarge,
    InvalidStreamId,
    SequenceError,
    StorageError,
    Stream,
    StreamClosed,
    StreamExists,
    StreamGone,
    StreamNotFound,
)

ROUTE = PREFIX + "{path:.+}"
routes = web.RouteTableDef()


def setup(app: web.Application, config: DurableConfig | None = None) -> None:
    """Serve the protocol on ``app`` (after the hub's own startup, which opens the store)."""
    app[DS] = Durable(config or DurableConfig.from_env())
    app.router.add_routes(routes)
    app.on_startup.append(_startup)

    async def on_shutdown(app: web.Application) -> None:
        app[DS].closing.set()

    app.on_shutdown.append(on_shutdown)


async def _startup(app: web.Application) -> None:
    hub, ds = app[HUB], app[DS]
    # the fork graph, from the streams' own labels (a fork's origin never changes)
    for i, sid in enumerate(hub.store.list()):
        with contextlib.suppress(StorageError, OSError):
            src = hub.store.get(sid).log.meta.labels.get(FORKED_FROM)
            if src is not None:
                ds.add_fork(src, sid)
        if i % 64 == 63:
            await asyncio.sleep(0)
    hub.store.on_delete.append(lambda sid: on_delete(hub, ds, sid))


# --- the I/O layer -------------------------------------------------------------------------------


def _common(request: web.Request, headers: dict[str, str] | Any) -> None:
    headers["X-Content-Type-Options"] = "nosniff"
    headers["Cross-Origin-Resource-Policy"] = "cross-origin"
    origin = request.headers.get("Origin")
    if origin is None:
        return
    if not request.app[HUB].auth.origin_allowed(origin, request.host):  # the WebSocket's allow-list
        return
    headers["Access-Control-Allow-Origin"] = origin  # never "*": the grant names the page
    headers["Vary"] = "Origin"
    headers["Access-Control-Expose-Headers"] = EXPOSE


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _endpoint(fn: Handler) -> Handler:
    """Protocol errors become status + headers + a small JSON body; every answer gets the
    browser-safety headers (nosniff, CORP, CORS)."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            resp = await fn(request)
        except DSError as e:
            resp = _error(e.status, e.code, e.message, e.headers)
        except HubError as e:
            resp = _error(e.status, e.code, e.message)
        except StorageError as e:
            resp = _storage_error(e)
        if resp.status >= 400:
            request.app[HUB].counters.errors += 1
        if not resp.prepared:
            _common(request, resp.headers)
        return resp

    return wrapped


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    body = msgspec.json.encode({"error": {"code": code, "message": message}})
    h = {"Content-Type": "application/json", "Cache-Control": "no-store", **(headers or {})}
    return web.Response(status=status, body=body, headers=h)


def _storage_error(e: StorageError) -> web.Response:
    if isinstance(e, StreamNotFound | StreamGone):
        return _error(404, "stream_not_found", str(e))  # deleted or expired: gone from the protocol's view
    if isinstance(e, InvalidStreamId):
        return _error(400, e.code, str(e))
    if isinstance(e, SequenceError):
        return _error(409, e.code, str(e))
    if isinstance(e, ChunkTooLarge):
        return _error(413, e.code, str(e))
    return _error(STATUS.get(e.code, 500), e.code, str(e))


def _sid(request: web.Request, action: str) -> str:
    sid = request.match_info["path"]
    request.app[HUB].auth.grant(bearer(request)).check(action, sid)
    return sid


def _content_type(s: Stream) -> str:
    return s.log.meta.content_type or UNTYPED


def _lookup(request: web.Request, sid: str) -> Stream:
    """The live stream ``sid``: 404 if it never existed or was deleted, 410 if soft-deleted."""
    hub, ds = request.app[HUB], request.app[DS]
    s = hub.store.get(sid)
    labels = s.log.meta.labels
    if labels.get(SOFT_DELETED):
        raise DSError(410, "stream_gone", f"stream {sid!r} was deleted; forks of it still exist")
    if labels.get(PENDING):
        # Its PUT has not answered yet, so for the protocol it does not exist yet. Outside a create
        # in progress it is the leftover of a create cut short by a stop before its initial content
        # was durable: it never existed for any client, so it goes now.
        if sid not in ds.creating:
            ds.spawn(_drop_leftover(hub, ds, sid))
        raise DSError(404, "stream_not_found", f"stream {sid!r} does not exist")
    return s


async def _drop_leftover(hub: Hub, ds: Durable, sid: str) -> None:
    async with ds.lock(sid):
        with contextlib.suppress(StorageError):
            if hub.store.get(sid).log.meta.labels.get(PENDING) and sid not in ds.creating:
                await hub.store.delete(sid, reason="incomplete create")


async def _read_body(request: web.Request, limit: int) -> bytes | None:
    """The whole body, or None if it is over ``limit`` (read to the end anyway, so the client gets
    our 413 instead of a reset connection)."""
    buf = bytearray()
    over = False
    async for part in request.content.iter_chunked(1 << 16):
        if over:
            continue
        if len(buf) + len(part) > limit:
            over = True
            buf.clear()
            continue
        buf += part
    return None if over else bytes(buf)


def _messages(content_type: str, body: bytes, chunk_limit: int, *, allow_empty: bool) -> list[bytes]:
    msgs = json_messages(body) if is_json(content_type) else [body]
    if not msgs and not allow_empty:
        raise DSError(400, "bad_request", "an empty JSON array appends nothing")
    for m in msgs:
        if len(m) > chunk_limit:
            raise DSError(413, "chunk_too_large", f"a message of {len(m)} bytes; the limit is {chunk_limit}")
    return msgs


def _meta_headers(s: Stream, status_headers: dict[str, str] | None = None) -> dict[str, str]:
    h = {"Content-Type": _content_type(s), "Stream-Next-Offset": format_offset(s.next_offset)}
    if s.ended:
        h["Stream-Closed"] = "true"
    return {**h, **(status_headers or {})}


@routes.route("OPTIONS", ROUTE)
@_endpoint
async def preflight(request: web.Request) -> web.StreamResponse:
    asked = request.headers.get("Access-Control-Request-Headers")
    return web.Response(
        status=204,
        headers={
            "Access-Control-Allow-Methods": "GET, HEAD, PUT, POST, DELETE, OPTIONS",
            "Access-Control-Allow-Headers": asked or ALLOW_HEADERS,
            "Access-Control-Max-Age": "86400",
        },
    )


# --- create ----------------------------------------------------------------------------------------


def _same_config(s: Stream, req: CreateRequest) -> bool:
    meta = s.log.meta
    if req.content_type is not None and essence(req.content_type) != essence(_content_type(s)):
        return False
    if req.fork_from is None or req.ttl is not None or req.expires_at is not None:
        if req.ttl != meta.idle_ttl:
            return False
        if (req.expires_at is None) != (meta.expires_at is None):
            return False
        if (
            req.expires_at is not None
            and meta.expires_at is not None
            and abs(req.expires_at - meta.expires_at) > 1e-3
        ):
            return False
    if meta.labels.get(FORKED_FROM) != req.fork_from:
        return False
    if req.fork_from is not None:
        if isinstance(req.fork_offset, int) and str(req.fork_offset) != meta.labels.get(FORK_OFFSET):
            return False
        if str(req.fork_sub) != meta.labels.get(FORK_SUB, "0"):
            return False
    return True


@routes.put(ROUTE)
@_endpoint
async def create(request: web.Request) -> web.StreamResponse:
    hub, ds = request.app[HUB], request.app[DS]
    sid = _sid(request, "write")
    req = CreateRequest.parse(request.headers)
    body = await _read_body(request, hub.config.max_message_bytes)
    if body is None:
        raise DSError(413, "body_too_large", f"the body is over {hub.config.max_message_bytes} bytes")
    async with ds.lock(sid):
        existing: Stream | None = None
        with contextlib.suppress(StreamNotFound, StreamGone):
            existing = hub.store.get(sid)
        if existing is not None and existing.log.meta.labels.get(SOFT_DELETED):
            raise DSError(409, "stream_gone", f"stream {sid!r} was deleted and forks of it remain")
        if existing is not None and existing.log.meta.labels.get(PENDING):
            await hub.store.delete(sid, reason="incomplete create")  # see _lookup
            existing = None
        if existing is not None:
            if not _same_config(existing, req):
                raise DSError(409, "stream_exists", f"stream {sid!r} exists with another configuration")
            return web.Response(status=200, headers=_meta_headers(existing))
        s = await _create(request, hub, ds, sid, req, body)
    location = str(request.url.with_query(None))
    return web.Response(status=201, headers=_meta_headers(s, {"Location": location}))


async def _create(
    request: web.Request, hub: Hub, ds: Durable, sid: str, req: CreateRequest, body: bytes
) -> Stream:
    labels: dict[str, str] = {}
    plan: ForkPlan | None = None
    ct, ttl, exp = req.content_type, req.ttl, req.expires_at
    if req.fork_from is not None:
        src = _fork_source(request, req.fork_from)
        src_ct = _content_type(src)
        if ct is not None and essence(ct) != essence(src_ct):
            raise DSError(409, "content_type_mismatch", f"the source is {src_ct}, not {ct}")
        ct = ct or src_ct
        if ttl is None and exp is None:  # a fork inherits the source's lifetime unless it names its own
            ttl, exp = src.log.meta.idle_ttl, src.log.meta.expires_at
        off = fork_offset(src, req.fork_offset)
        plan = fork_plan(src, off, req.fork_sub, is_json(ct))
        labels = {FORKED_FROM: req.fork_from, FORK_OFFSET: str(off), FORK_SUB: str(req.fork_sub)}
    ct = ct or DEFAULT_TYPE
    chunks = _messages(ct, body, hub.config.max_chunk_bytes, allow_empty=True) if body else []
    initial = bool((plan and (plan.end or plan.partial)) or chunks or req.closed)
    if initial:
        labels[PENDING] = "1"
    try:
        s = await hub.store.create(sid, content_type=ct, expires_at=exp, idle_ttl=ttl, labels=labels)
    except StreamExists:
        raise DSError(409, "stream_exists", f"stream {sid!r} was created concurrently") from None
    if req.fork_from is not None:
        ds.add_fork(req.fork_from, sid)
    if not initial:
        return s
    ds.creating.add(sid)
    try:
        if plan is not None:
            await plan.copy_into(s)
        if chunks:
            await s.append(chunks, close=req.closed)
        elif req.closed:
            await s.close()
        del labels[PENDING]
        await hub.store.set_labels(sid, labels)
    finally:
        ds.creating.discard(sid)
    return s


def _fork_source(request: web.Request, src_id: str) -> Stream:
    request.app[HUB].auth.grant(bearer(request)).check("read", src_id)  # a fork reads its source
    try:
        return _lookup(request, src_id)
    except DSError as e:
        if e.status == 410:
            raise DSError(409, "stream_gone", f"cannot fork {src_id!r}: it was deleted") from None
        raise


# --- append and close ------------------------------------------------------------------------------


@routes.post(ROUTE)
@_endpoint
async def append(request: web.Request) -> web.StreamResponse:
    hub = request.app[HUB]
    sid = _sid(request, "write")
    h = request.headers
    producer = producer_headers(h)
    stream_seq = h.get("Stream-Seq")
    closing = flag(h.get("Stream-Closed"))
    body = await _read_body(request, hub.config.max_message_bytes)
    if body is None:
        raise DSError(413, "body_too_large", f"the body is over {hub.config.max_message_bytes} bytes")
    # No lock here: producer validation and the append happen with no await in between, and an
    # append is ordered the moment it enters the log, so concurrent POSTs share a group commit.
    s = _lookup(request, sid)
    if not body:
        if not closing:
            raise DSError(400, "bad_request", "an empty body appends nothing (close with Stream-Closed)")
        return await _close_only(s, producer)
    ct = h.get("Content-Type")
    if not ct:
        raise DSError(400, "bad_request", "Content-Type is required")
    if essence(ct) != essence(_content_type(s)):
        raise DSError(409, "content_type_mismatch", f"the stream is {_content_type(s)}, not {ct}")
    chunks = _messages(_content_type(s), body, hub.config.max_chunk_bytes, allow_empty=False)
    extra: dict[str, str] = {}
    if producer is not None:
        dup = check_producer(s.log.producers.get(producer.id), producer)
        extra = {"Producer-Epoch": str(producer.epoch), "Producer-Seq": str(producer.seq)}
        if dup is not None:
            if closing and not s.ended:
                with contextlib.suppress(StreamClosed):
                    await s.close()
            return web.Response(status=204, headers=_write_headers(s, {**extra, "Producer-Seq": str(dup)}))
    try:
        res = await s.append(
            chunks,
            producer.id if producer else None,
            producer.seq if producer else None,
            producer.epoch if producer else 0,
            stream_seq=stream_seq,
            close=closing,
        )
    except StreamClosed:
        raise DSError(409, "stream_closed", f"stream {sid!r} is closed", _write_headers(s)) from None
    if not res.duplicate:
        hub.counters.appends += 1
        hub.counters.appended_chunks += res.count
    headers = _write_headers(s, extra)
    headers["Stream-Next-Offset"] = format_offset(res.offset + res.count)
    return web.Response(status=200 if producer is not None and not res.duplicate else 204, headers=headers)


def _write_headers(s: Stream, extra: dict[str, str] | None = None) -> dict[str, str]:
    h = {"Stream-Next-Offset": format_offset(s.log.next_offset)}
    if s.log.close_info is not None:
        h["Stream-Closed"] = "true"
    return {**h, **(extra or {})}


async def _close_only(s: Stream, producer: ProducerHeaders | None) -> web.Response:
    extra: dict[str, str] = {}
    if producer is not None:
        dup = check_producer(s.log.producers.get(producer.id), producer)
        extra = {
            "Producer-Epoch": str(producer.epoch),
            "Producer-Seq": str(producer.seq if dup is None else dup),
        }
    if s.log.close_info is None:
        p = (producer.id, producer.epoch, producer.seq) if producer is not None else None
        await s.close("done", producer=p)
    else:
        s.touch()  # closing a closed stream is a no-op that still counts as a write
    return web.Response(status=204, headers=_write_headers(s, extra))


# --- metadata and delete -----------------------------------------------------------------------------


@routes.head(ROUTE)
@_endpoint
async def head(request: web.Request) -> web.StreamResponse:
    s = _lookup(request, _sid(request, "read"))  # no touch: HEAD does not extend Stream-TTL
    h = _meta_headers(s, {"Cache-Control": "no-store"})
    meta = s.log.meta
    if meta.idle_ttl is not None:
        h["Stream-TTL"] = format_ttl(meta.idle_ttl)
    if meta.expires_at is not None:
        h["Stream-Expires-At"] = format_expires(meta.expires_at)
    return web.Response(status=200, headers=h)


@routes.delete(ROUTE)
@_endpoint
async def delete(request: web.Request) -> web.StreamResponse:
    hub, ds = request.app[HUB], request.app[DS]
    sid = _sid(request, "write")
    async with ds.lock(sid):
        s = _lookup(request, sid)
        if ds.forks.get(sid):
            # forks carry their own copy of the data, but the name stays taken while they live
            await hub.store.set_labels(sid, {**s.log.meta.labels, SOFT_DELETED: "1"})
        else:
            await hub.store.delete(sid)
    return web.Response(status=204)


# --- reads ---------------------------------------------------------------------------------------------


@routes.get(ROUTE, allow_head=False)
@_endpoint
async def read(request: web.Request) -> web.StreamResponse:
    hub, ds = request.app[HUB], request.app[DS]
    sid = _sid(request, "read")
    q = request.query
    offsets = q.getall("offset", [])
    if len(offsets) > 1:
        raise DSError(400, "invalid_offset", "one offset parameter at most")
    raw = parse_offset(offsets[0]) if offsets else None
    live = q.get("live")
    if live not in (None, "long-poll", "sse"):
        raise DSError(400, "bad_request", f"live must be long-poll or sse, not {live[:20]!r}")
    if live is not None and raw is None:
        raise DSError(400, "bad_request", "live reads need an offset (-1 for the start)")
    s = _lookup(request, sid)
    s.touch()
    tail = s.next_offset
    if raw is None or raw == "-1":
        start = 0
    elif raw == "now":
        start = tail
    else:
        assert isinstance(raw, int)
        if raw > tail:
            raise DSError(400, "invalid_offset", f"offset {raw} is past the tail ({tail})")
        start = raw
    cur = cursor(q.get("cursor"), time.time())
    if live == "sse":
        return await _sse(request, ds, s, start, cur)
    if raw == "now" and live is None:
        h = _meta_headers(s, {"Stream-Up-To-Date": "true", "Cache-Control": "no-store"})
        return web.Response(status=200, body=render(_content_type(s), []), headers=h)
    if live == "long-poll" and start >= s.next_offset and not s.ended:
        await ds.wait(s, start, ds.config.long_poll_s)
        if s.deleted:
            raise DSError(404, "stream_not_found", f"stream {sid!r} was deleted")
    if live == "long-poll" and start >= s.next_offset:
        h = _meta_headers(s, {"Stream-Up-To-Date": "true", "Stream-Cursor": cur, "Cache-Control": "no-store"})
        return web.Response(status=204, headers=h)
    return _catch_up(request, hub, ds.config, s, start, cur if live else None)


def _catch_up(
    request: web.Request, hub: Hub, cfg: DurableConfig, s: Stream, start: int, cur: str | None
) -> web.Response:
    chunks = s.read(start, cfg.read_max_chunks, cfg.read_max_bytes) if start < s.next_offset else []
    end = start + len(chunks)
    up_to_date = end >= s.next_offset
    closed = up_to_date and s.ended
    etag = f'"{s.log.meta.epoch}:{start}:{end}{":c" if closed else ""}"'
    h = _meta_headers(s, {"Stream-Next-Offset": format_offset(end), "ETag": etag})
    if not closed:
        h.pop("Stream-Closed", None)
    if up_to_date:
        h["Stream-Up-To-Date"] = "true"
    if cur is not None:
        h["Stream-Cursor"] = cur
    if up_to_date and not closed:
        h["Cache-Control"] = "no-cache"  # the same URL will answer more once more is appended
    else:
        scope = "private" if hub.auth.enabled else "public"
        h["Cache-Control"] = f"{scope}, max-age=60, stale-while-revalidate=300"
    inm = request.headers.get("If-None-Match")
    if inm is not None and etag in (t.strip().removeprefix("W/") for t in inm.split(",")):
        return web.Response(status=304, headers={k: v for k, v in h.items() if k != "Content-Type"})
    return web.Response(status=200, body=render(_content_type(s), chunks), headers=h)


async def _sse(request: web.Request, ds: Durable, s: Stream, start: int, cur: str) -> web.StreamResponse:
    cfg = ds.config
    ct = _content_type(s)
    mode = "json" if is_json(ct) else "text" if is_text(ct) else "base64"
    headers = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    if mode == "base64":
        headers["Stream-SSE-Data-Encoding"] = "base64"
    _common(request, headers)
    resp = web.StreamResponse(status=200, headers=headers)
    await resp.prepare(request)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + cfg.sse_max_s
    offset, controlled = start, -1  # controlled: the offset of the last control event sent
    try:
        while not s.deleted:
            if offset < s.next_offset:
                chunks = s.read(offset, cfg.read_max_chunks, cfg.read_max_bytes)
                offset += len(chunks)
                up_to_date = offset >= s.next_offset
                closed = up_to_date and s.ended
                await resp.write(
                    (sse_data(mode, chunks) + sse_control(offset, cur, up_to_date, closed)).encode()
                )
                controlled = offset
                if closed:
                    break
                continue
            if s.ended:  # caught up with a closed stream: say so, and end the response
                await resp.write(sse_control(offset, cur, True, True).encode())
                break
            if controlled != offset:
                await resp.write(sse_control(offset, cur, True, False).encode())
                controlled = offset
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            if ds.closing.is_set():
                break
            if not await ds.wait(s, offset, min(cfg.sse_keepalive_s, remaining)):
                await resp.write(b": keep-alive\n\n")
    except (ConnectionError, StorageError):
        pass  # the client went away, or the stream broke: it resumes from its last offset
    with contextlib.suppress(ConnectionError):
        await resp.write_eof()
    return resp
