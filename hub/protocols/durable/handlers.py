"""Durable Streams HTTP handlers under ``/v1/stream/{path}``: they parse with ``wire``, act through the
hub's service API (``hub.core.service``), and answer status + headers. Errors go to the app's one
error middleware in the ``durable`` dialect; CORS, preflights and the browser-safety headers are
``hub.protocols.cors``'s (policy ``DURABLE``)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from hub.core.auth import bearer
from hub.core.errors import DSError, HubError
from hub.core.fanout import Format
from hub.core.service import HUB, Hub
from hub.protocols.durable.forks import ForkPlan, fork_offset, fork_plan, on_delete
from hub.protocols.durable.state import DS, Durable, DurableConfig
from hub.protocols.durable.wire import (
    DEFAULT_TYPE,
    FORK_OFFSET,
    FORK_SUB,
    FORKED_FROM,
    PENDING,
    PREFIX,
    SOFT_DELETED,
    UNTYPED,
    CreateRequest,
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
from hub.protocols.http_errors import use_dialect
from hub.protocols.sse import pump as sse_pump
from storage import CloseInfo, StreamHandle

ROUTE = PREFIX + "{path:.+}"
routes = web.RouteTableDef()


def setup(app: web.Application, config: DurableConfig | None = None) -> None:
    """Serve the protocol on ``app`` (after the hub's own startup, which opens the store)."""
    app[DS] = Durable(config or DurableConfig.from_hub(app[HUB].config))
    app.router.add_routes(routes)
    app.on_startup.append(_startup)

    async def on_shutdown(app: web.Application) -> None:
        app[DS].closing.set()

    app.on_shutdown.append(on_shutdown)


async def _startup(app: web.Application) -> None:
    hub, ds = app[HUB], app[DS]
    # the fork graph, from the streams' own labels (a fork's origin never changes)
    for i, sid in enumerate(await hub.list_streams()):
        with contextlib.suppress(HubError, OSError):
            src = (await hub.get(sid)).meta.labels.get(FORKED_FROM)
            if src is not None:
                ds.add_fork(src, sid)
        if i % 64 == 63:
            await asyncio.sleep(0)
    hub.watch(deleted=lambda sid: on_delete(hub, ds, sid))


# --- the I/O layer -------------------------------------------------------------------------------


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _endpoint(fn: Handler) -> Handler:
    """Errors of this handler are answered as Durable Streams documents them (see hub/core/errors.py)."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        use_dialect(request, "durable")
        return await fn(request)

    return wrapped


def _sid(request: web.Request, action: str) -> str:
    sid = request.match_info["path"]
    request.app[HUB].auth.grant(bearer(request)).check(action, sid)
    return sid


def _content_type(s: StreamHandle) -> str:
    return s.meta.content_type or UNTYPED


async def _get(hub: Hub, sid: str) -> StreamHandle | None:
    """The stream, or None if it is not there (never created, deleted or expired)."""
    try:
        return await hub.get(sid)
    except HubError as e:
        if e.code in ("stream_not_found", "stream_gone"):
            return None
        raise


async def _lookup(request: web.Request, sid: str) -> StreamHandle:
    """The live stream ``sid``: 404 if it never existed or was deleted, 410 if soft-deleted."""
    hub, ds = request.app[HUB], request.app[DS]
    s = await hub.get(sid)
    labels = s.meta.labels
    if labels.get(SOFT_DELETED):
        raise DSError("stream_gone", f"stream {sid!r} was deleted; forks of it still exist")
    if labels.get(PENDING):
        # Its PUT has not answered yet, so for the protocol it does not exist yet. Outside a create
        # in progress it is the leftover of a create cut short by a stop before its initial content
        # was durable: it never existed for any client, so it goes now.
        if sid not in ds.creating:
            ds.tasks.spawn(_drop_leftover(hub, ds, sid))
        raise DSError("stream_not_found", f"stream {sid!r} does not exist")
    return s


async def _drop_leftover(hub: Hub, ds: Durable, sid: str) -> None:
    async with ds.lock(sid):
        with contextlib.suppress(HubError):
            if (await hub.get(sid)).meta.labels.get(PENDING) and sid not in ds.creating:
                await hub.delete(sid, reason="incomplete create")


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


def _messages(hub: Hub, sid: str, content_type: str, body: bytes, *, allow_empty: bool) -> list[bytes]:
    msgs = json_messages(body) if is_json(content_type) else [body]
    if not msgs and not allow_empty:
        raise DSError("bad_request", "an empty JSON array appends nothing")
    hub.check_chunks(sid, msgs)  # before a create, so a refused initial body leaves no stream behind
    return msgs


def _meta_headers(s: StreamHandle, status_headers: dict[str, str] | None = None) -> dict[str, str]:
    h = {"Content-Type": _content_type(s), "Stream-Next-Offset": format_offset(s.next_offset)}
    if s.ended:
        h["Stream-Closed"] = "true"
    return {**h, **(status_headers or {})}


# --- create ----------------------------------------------------------------------------------------


def _same_config(s: StreamHandle, req: CreateRequest) -> bool:
    meta = s.meta
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
        raise DSError("body_too_large", f"the body is over {hub.config.max_message_bytes} bytes")
    async with ds.lock(sid):
        existing = await _get(hub, sid)
        if existing is not None and existing.meta.labels.get(SOFT_DELETED):
            raise DSError("stream_gone", f"stream {sid!r} was deleted and forks of it remain", status=409)
        if existing is not None and existing.meta.labels.get(PENDING):
            await hub.delete(sid, reason="incomplete create")  # see _lookup
            existing = None
        if existing is not None:
            if not _same_config(existing, req):
                raise DSError("stream_exists", f"stream {sid!r} exists with another configuration")
            return web.Response(status=200, headers=_meta_headers(existing))
        s = await _create(request, hub, ds, sid, req, body)
    location = str(request.url.with_query(None))
    return web.Response(status=201, headers=_meta_headers(s, {"Location": location}))


async def _create(
    request: web.Request, hub: Hub, ds: Durable, sid: str, req: CreateRequest, body: bytes
) -> StreamHandle:
    labels: dict[str, str] = {}
    plan: ForkPlan | None = None
    ct, ttl, exp = req.content_type, req.ttl, req.expires_at
    if req.fork_from is not None:
        src = await _fork_source(request, req.fork_from)
        src_ct = _content_type(src)
        if ct is not None and essence(ct) != essence(src_ct):
            raise DSError("content_type_mismatch", f"the source is {src_ct}, not {ct}")
        ct = ct or src_ct
        if ttl is None and exp is None:  # a fork inherits the source's lifetime unless it names its own
            ttl, exp = src.meta.idle_ttl, src.meta.expires_at
        off = fork_offset(src, req.fork_offset)
        plan = await fork_plan(hub, src, off, req.fork_sub, is_json(ct))
        labels = {FORKED_FROM: req.fork_from, FORK_OFFSET: str(off), FORK_SUB: str(req.fork_sub)}
    ct = ct or DEFAULT_TYPE
    chunks = _messages(hub, sid, ct, body, allow_empty=True) if body else []
    initial = bool((plan and (plan.end or plan.partial)) or chunks or req.closed)
    if initial:
        labels[PENDING] = "1"
    try:
        # the protocol lets a deleted id be created again (docs/durable-streams.md, "Lifetime")
        s = await hub.create(
            sid, content_type=ct, expires_at=exp, idle_ttl=ttl, labels=labels, replace_gone=True
        )
    except HubError as e:
        if e.code == "stream_exists":
            raise DSError("stream_exists", f"stream {sid!r} was created concurrently") from None
        raise
    if req.fork_from is not None:
        ds.add_fork(req.fork_from, sid)
    if not initial:
        return s
    ds.creating.add(sid)
    try:
        if plan is not None:
            await plan.copy_into(hub, s)
        if chunks:
            await hub.append(s, chunks, close=req.closed)
        elif req.closed:
            await hub.close(s)
        del labels[PENDING]
        await hub.set_labels(sid, labels)
    finally:
        ds.creating.discard(sid)
    return s


async def _fork_source(request: web.Request, src_id: str) -> StreamHandle:
    request.app[HUB].auth.grant(bearer(request)).check("read", src_id)  # a fork reads its source
    try:
        return await _lookup(request, src_id)
    except HubError as e:
        if e.code == "stream_gone":
            raise DSError("stream_gone", f"cannot fork {src_id!r}: it was deleted", status=409) from None
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
        raise DSError("body_too_large", f"the body is over {hub.config.max_message_bytes} bytes")
    # No lock here: an append is ordered the moment it enters the log, so concurrent POSTs share a
    # group commit. The producer check below is the protocol's reading of the producer state (its
    # own codes and headers); the engine itself refuses a seq it has already seen.
    s = await _lookup(request, sid)
    if not body:
        if not closing:
            raise DSError("bad_request", "an empty body appends nothing (close with Stream-Closed)")
        return await _close_only(hub, s, producer)
    ct = h.get("Content-Type")
    if not ct:
        raise DSError("bad_request", "Content-Type is required")
    if essence(ct) != essence(_content_type(s)):
        raise DSError("content_type_mismatch", f"the stream is {_content_type(s)}, not {ct}")
    chunks = _messages(hub, sid, _content_type(s), body, allow_empty=False)
    extra: dict[str, str] = {}
    if producer is not None:
        try:
            dup = check_producer(await hub.producer_state(s, producer.id), producer)
        except DSError:
            await _settled(hub, s, producer.id)
            raise
        extra = {"Producer-Epoch": str(producer.epoch), "Producer-Seq": str(producer.seq)}
        if dup is not None:
            await _settled(hub, s, producer.id)
            if closing and not s.ended:
                with contextlib.suppress(HubError):  # closed meanwhile: as asked
                    await hub.close(s)
            return web.Response(status=204, headers=_write_headers(s, {**extra, "Producer-Seq": str(dup)}))
    try:
        res = await hub.append(
            s,
            chunks,
            producer.id if producer else None,
            producer.seq if producer else None,
            producer.epoch if producer else 0,
            stream_seq=stream_seq,
            close=closing,
        )
    except HubError as e:
        if e.code == "stream_closed":
            raise DSError("stream_closed", f"stream {sid!r} is closed", _write_headers(s)) from None
        raise
    headers = _write_headers(s, extra)
    headers["Stream-Next-Offset"] = format_offset(res.offset + res.count)
    return web.Response(status=200 if producer is not None and not res.duplicate else 204, headers=headers)


async def _settled(hub: Hub, s: StreamHandle, producer_id: str) -> None:
    """A duplicate or a refusal is answered only once the producer state it was decided from is
    durable (storage/engine.py): a crash must not undo an append a client was told had landed."""
    st = await hub.producer_state(s, producer_id)
    if st is None or not st.count or s.next_offset >= st.first_offset + st.count:
        return
    # bounded: an append that failed and was rolled back never becomes durable
    if not await hub.wait(s, st.first_offset + st.count - 1, timeout=30.0):
        raise DSError("storage_unavailable", "the producer's last append did not become durable")


def _write_headers(s: StreamHandle, extra: dict[str, str] | None = None) -> dict[str, str]:
    h = {"Stream-Next-Offset": format_offset(s.next_offset)}
    if s.close_info is not None:
        h["Stream-Closed"] = "true"
    return {**h, **(extra or {})}


async def _close_only(hub: Hub, s: StreamHandle, producer: ProducerHeaders | None) -> web.Response:
    extra: dict[str, str] = {}
    if producer is not None:
        dup = check_producer(await hub.producer_state(s, producer.id), producer)
        extra = {
            "Producer-Epoch": str(producer.epoch),
            "Producer-Seq": str(producer.seq if dup is None else dup),
        }
    if s.close_info is None:
        p = (producer.id, producer.epoch, producer.seq) if producer is not None else None
        await hub.close(s, "done", producer=p)
    else:
        s.touch()  # closing a closed stream is a no-op that still counts as a write
    return web.Response(status=204, headers=_write_headers(s, extra))


# --- metadata and delete -----------------------------------------------------------------------------


@routes.head(ROUTE)
@_endpoint
async def head(request: web.Request) -> web.StreamResponse:
    s = await _lookup(request, _sid(request, "read"))  # no touch: HEAD does not extend Stream-TTL
    h = _meta_headers(s, {"Cache-Control": "no-store"})
    meta = s.meta
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
        s = await _lookup(request, sid)
        if ds.forks.get(sid):
            # forks carry their own copy of the data, but the name stays taken while they live
            await hub.set_labels(sid, {**s.meta.labels, SOFT_DELETED: "1"})
        else:
            await hub.delete(sid)
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
        raise DSError("invalid_offset", "one offset parameter at most")
    raw = parse_offset(offsets[0]) if offsets else None
    live = q.get("live")
    if live not in (None, "long-poll", "sse"):
        raise DSError("bad_request", f"live must be long-poll or sse, not {live[:20]!r}")
    if live is not None and raw is None:
        raise DSError("bad_request", "live reads need an offset (-1 for the start)")
    s = await _lookup(request, sid)
    s.touch()
    tail = s.next_offset
    if raw is None or raw == "-1":
        start = 0
    elif raw == "now":
        start = tail
    else:
        assert isinstance(raw, int)
        if raw > tail:
            raise DSError("invalid_offset", f"offset {raw} is past the tail ({tail})")
        start = raw
    cur = cursor(q.get("cursor"), time.time())
    if live == "sse":
        return await _sse(request, hub, ds, s, start, cur)
    if raw == "now" and live is None:
        h = _meta_headers(s, {"Stream-Up-To-Date": "true", "Cache-Control": "no-store"})
        return web.Response(status=200, body=render(_content_type(s), []), headers=h)
    if live == "long-poll" and start >= s.next_offset and not s.ended:
        await ds.wait(hub, s, start, ds.config.long_poll_s)
        if start >= s.next_offset and not s.ended and not await hub.exists(sid):
            raise DSError("stream_not_found", f"stream {sid!r} was deleted")
    if live == "long-poll" and start >= s.next_offset:
        h = _meta_headers(s, {"Stream-Up-To-Date": "true", "Stream-Cursor": cur, "Cache-Control": "no-store"})
        return web.Response(status=204, headers=h)
    return await _catch_up(request, hub, ds.config, s, start, cur if live else None)


async def _catch_up(
    request: web.Request, hub: Hub, cfg: DurableConfig, s: StreamHandle, start: int, cur: str | None
) -> web.Response:
    chunks = (
        await hub.read(s, start, cfg.read_max_chunks, cfg.read_max_bytes, "ds")
        if start < s.next_offset
        else []
    )
    end = start + len(chunks)
    up_to_date = end >= s.next_offset
    closed = up_to_date and s.ended
    etag = f'"{s.epoch}:{start}:{end}{":c" if closed else ""}"'
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


class _SseFormat(Format):
    """Durable Streams SSE frames for the fan-out (one instance per response): each run of chunks is
    a ``data`` event and the ``control`` event after it; the end is a closing ``control`` (unless
    the last run already said so); errors (a deleted stream) end the response without an event."""

    transport = "ds"

    def __init__(self, s: StreamHandle, mode: str, cur: str) -> None:
        self.s, self.mode, self.cur, self.closed = s, mode, cur, False

    def chunks(self, stream: str, offset: int, data: list[bytes]) -> str:
        end = offset + len(data)
        up_to_date = end >= self.s.next_offset
        self.closed = up_to_date and self.s.ended
        return sse_data(self.mode, data) + sse_control(end, self.cur, up_to_date, self.closed)

    def end(self, stream: str, offset: int, info: CloseInfo) -> str:
        return "" if self.closed else sse_control(offset, self.cur, True, True)

    def error(self, stream: str, code: str, message: str) -> str:
        return ""


async def _sse(
    request: web.Request, hub: Hub, ds: Durable, s: StreamHandle, start: int, cur: str
) -> web.StreamResponse:
    """Replay from ``start``, then live, through the hub's fan-out (the same push path as every other
    subscriber), until the stream ends, the response has lasted ``sse_max_s`` or the hub stops."""
    cfg = ds.config
    ct = _content_type(s)
    mode = "json" if is_json(ct) else "text" if is_text(ct) else "base64"
    headers = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    if mode == "base64":
        headers["Stream-SSE-Data-Encoding"] = "base64"
    resp = web.StreamResponse(status=200, headers=headers)
    await resp.prepare(request)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + cfg.sse_max_s
    with contextlib.suppress(ConnectionError):
        if start >= s.next_offset and not s.ended:  # up to date from the start: say so at once
            await resp.write(sse_control(start, cur, True, False).encode())
    remaining = deadline - loop.time()
    await sse_pump(
        resp,
        hub,
        s,
        start,
        _SseFormat(s, mode, cur),
        keepalive_s=cfg.sse_keepalive_s,
        max_s=max(0.0, remaining),
        stop=ds.closing,
    )
    with contextlib.suppress(ConnectionError):
        await resp.write_eof()
    return resp
