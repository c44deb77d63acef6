"""Fan-out: every subscriber gets every durable chunk from its offset on, once, in order.

Invariants:

* A subscription is registered for live chunks *before* it reads its replay range, and live chunks
  that arrive while it replays are ignored: storage publishes a chunk only once it is readable, so
  the replay loop reads it from disk instead. The switch from replay to live happens with no await
  between "caught up with storage" and "mode = live", so no chunk can fall between the two.
* Each connection has a bounded ``Outbox`` drained by its own writer task; fan-out never awaits a
  socket. A live chunk that does not fit drops that subscription back to replay, which catches up
  from storage at the speed the reader can take. A slow reader therefore costs a bounded buffer and
  some disk reads, never the producer's or anyone else's latency.
* ``next`` is the offset of the next chunk the subscription accepts; every frame it emits starts
  exactly there, so a frame is never a duplicate and never leaves a gap.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

from hub.core.analytics import Analytics
from hub.core.errors import HubError, storage_errors
from hub.core.outbox import Outbox, OutboxClosed
from hub.core.signal import Signal
from hub.protocols.native.messages import Chunks, End, Error, Reset, encode
from storage import CloseInfo, CloseStatus, StreamHandle


class Format:
    """How frames look on a transport: the WebSocket protocol's by default; each SSE flavour (ours,
    Durable Streams') overrides it. ``chunks`` gets the chunks' bytes: a format that shows text
    decodes them (and the fan-out builds each run's frame once per format, however many subscribe).
    ``transport`` names the transport in analytics (hub/core/analytics.py)."""

    transport = "ws"

    def chunks(self, stream: str, offset: int, data: list[bytes]) -> str:
        return encode(Chunks(stream, offset, texts(data)))

    def end(self, stream: str, offset: int, info: CloseInfo) -> str:
        # the engine types statuses as str; a CloseInfo only ever holds a CloseStatus
        return encode(End(stream, offset, cast(CloseStatus, info.status), info.error))

    def error(self, stream: str, code: str, message: str) -> str:
        return encode(Error(code, message, stream))

    def reset(self, stream: str, epoch: str) -> str | None:
        """The frame telling a live subscriber its offsets are void (chunks from 0 follow), or None
        for a transport with no such frame (only the WebSocket protocol's, this base, has one)."""
        return encode(Reset(stream, epoch)) if type(self) is Format else None


WS_FORMAT = Format()


@dataclass
class FanoutStats:
    deliveries: int = 0  # chunks handed to outboxes
    frames: int = 0
    slow_drops: int = 0  # live feed dropped to replay because the outbox was full
    replayed: int = 0  # chunks read from storage for a subscriber
    resumes: int = 0  # subscriptions that started past offset 0


def texts(chunks: list[bytes]) -> list[str]:
    return [c.decode("utf-8", "replace") for c in chunks]


@dataclass(eq=False, slots=True)  # slots: every idle subscriber holds one, a __dict__ each adds up
class Subscription:
    fanout: Fanout
    stream: StreamHandle
    outbox: Outbox
    next: int
    fmt: Format = WS_FORMAT
    coalesce_ms: float = 0.0
    coalesce_bytes: int = 16384
    replay_batch: int = 1024
    mode: str = "replay"  # replay -> live -> done
    _pending: list[bytes] = field(default_factory=list)
    _pending_from: int = 0
    _pending_bytes: int = 0
    _timer: asyncio.TimerHandle | None = None
    _task: asyncio.Task[None] | None = None
    on_done: Callable[[], None] | None = None  # the owner forgets the subscription (end sent, gone, stopped)
    finished: Signal = field(default_factory=Signal)  # set once nothing more will be queued
    resumed_at: float = 0.0  # monotonic start of a resume's replay, for analytics (0: not timed)

    def start(self) -> None:
        self.mode = "replay"
        self._task = asyncio.create_task(self._replay())

    def stop(self) -> None:
        if self.mode != "done":
            self.fanout.left(self)
        self.mode = "done"
        if self._timer:
            self._timer.cancel()
        if self._task and self._task is not asyncio.current_task():
            self._task.cancel()
        self.fanout._remove(self)

    # --- replay ------------------------------------------------------------------------------

    async def _replay(self) -> None:
        st = self.fanout.stats
        s = self.stream
        try:
            while self.mode == "replay":
                await self.outbox.wait_space()
                if self.next < s.next_offset:
                    # frames a quarter of the outbox: a stalled reader pins at most ~1.5 outboxes of memory
                    with storage_errors(s.id):
                        chunks = await s.read_chunks(
                            self.next, self.replay_batch, max(16 << 10, self.outbox.max_bytes // 4)
                        )
                    frame = self.fmt.chunks(s.id, self.next, chunks)
                    self.next += len(chunks)
                    st.replayed += len(chunks)
                    st.deliveries += len(chunks)
                    st.frames += 1
                    await self.outbox.put(frame)
                    self.fanout.tally(self, chunks, replay=True)
                    await asyncio.sleep(0)  # let the writer send this frame before we build the next
                    continue
                # caught up with storage: no await from here until the mode switch
                if self.resumed_at:
                    self.fanout.caught_up(self)
                if s.ended and s.close_info is not None:
                    self.mode = "done"
                    await self.outbox.put(self.fmt.end(s.id, self.next, s.close_info))
                    self.fanout._remove(self)
                    return
                self.mode = "live"
        except (OutboxClosed, asyncio.CancelledError):
            pass
        except HubError as e:
            self.outbox.force(self.fmt.error(s.id, e.code, e.message))
            self.mode = "done"
            self.fanout._remove(self)
        finally:
            if self._task is asyncio.current_task():
                self._task = None  # live now (or done): a finished task is 0.7 KB per idle subscriber

    def _to_replay(self) -> None:
        if self.mode == "done":
            return
        if self._timer:
            self._timer.cancel()
            self._timer = None
        if self._pending:
            self.next = self._pending_from
            self._pending.clear()
            self._pending_bytes = 0
        self.fanout.stats.slow_drops += 1
        self.start()

    # --- live --------------------------------------------------------------------------------

    def on_chunks(self, offset: int, chunks: list[bytes], frames: dict[Format, str]) -> None:
        """A durable chunk run from storage; ``frames`` caches the encoded frame per format."""
        if self.mode != "live":
            return
        end = offset + len(chunks)
        if end <= self.next:
            return
        if offset > self.next:  # cannot happen while storage publishes in order; recover anyway
            self._to_replay()
            return
        if offset < self.next:
            chunks = chunks[self.next - offset :]
            offset = self.next
            frame = self.fmt.chunks(self.stream.id, offset, chunks)
        elif self.coalesce_ms <= 0:
            frame = frames.get(self.fmt) or frames.setdefault(
                self.fmt, self.fmt.chunks(self.stream.id, offset, chunks)
            )
        if self.coalesce_ms > 0:
            if not self._pending:
                self._pending_from = offset
                self._timer = asyncio.get_running_loop().call_later(self.coalesce_ms / 1000, self.flush)
            self._pending += chunks
            self._pending_bytes += sum(map(len, chunks))
            self.next = end
            if self._pending_bytes >= self.coalesce_bytes:
                self.flush()
            return
        if self.outbox.offer(frame):
            self.next = end
            self.fanout.stats.deliveries += len(chunks)
            self.fanout.stats.frames += 1
            if chunks is not self.fanout._run or not self.fanout._run_single:
                self.fanout.tally(self, chunks)  # else counted once for the whole run, at its end
        else:
            self._to_replay()

    def flush(self) -> None:
        if self._timer:
            self._timer.cancel()
            self._timer = None
        if not self._pending or self.mode != "live":
            return
        frame = self.fmt.chunks(self.stream.id, self._pending_from, self._pending)
        if self.outbox.offer(frame):
            self.fanout.stats.deliveries += len(self._pending)
            self.fanout.stats.frames += 1
            self.fanout.tally(self, self._pending, nbytes=self._pending_bytes)
            self._pending = []
            self._pending_bytes = 0
        else:
            self._to_replay()

    def on_end(self, info: CloseInfo) -> None:
        if self.mode != "live":
            return  # the replay loop sends the end once it has caught up
        self.flush()
        if self.mode != "live":
            return
        if self.next == self.stream.next_offset and self.outbox.offer(
            self.fmt.end(self.stream.id, self.next, info)
        ):
            self.mode = "done"
            self.fanout._remove(self)
        else:
            self._to_replay()

    def on_gone(self) -> None:
        self.outbox.force(self.fmt.error(self.stream.id, "stream_gone", "the stream was deleted or expired"))
        self.stop()

    def on_reset(self, epoch: str) -> None:
        """The engine renewed the stream's epoch: say ``reset``, then replay from 0 in the new one
        (a transport without a reset frame ends with ``stream_reset``: its client starts over)."""
        if self.mode == "done":
            return
        frame = self.fmt.reset(self.stream.id, epoch)
        if frame is None:
            self.outbox.force(
                self.fmt.error(self.stream.id, "stream_reset", f"the stream restarted as epoch {epoch}")
            )
            self.stop()
            return
        if self._timer:
            self._timer.cancel()
            self._timer = None
        self._pending.clear()
        self._pending_bytes = 0
        if self._task is not None:
            self._task.cancel()
        self.outbox.force(frame)
        self.next = 0
        self.start()


class Fanout:
    """Storage listener that routes each durable chunk to the subscriptions of its stream."""

    def __init__(self, analytics: Analytics | None = None) -> None:
        self.subs: dict[str, set[Subscription]] = {}
        self.stats = FanoutStats()
        self.analytics = analytics
        # analytics of the run being delivered: its chunks and bytes (summed once), whether all its
        # subscribers have one transport (then its frames are counted at its end, not one by one),
        # and how many frames were counted one by one
        self._run: list[bytes] | None = None
        self._run_bytes = 0
        self._run_single = False
        self._run_other = 0
        self._kinds: dict[str, dict[str, int]] = {}  # per stream: subscribers per transport

    def subscribe(
        self,
        stream: StreamHandle,
        outbox: Outbox,
        offset: int,
        fmt: Format = WS_FORMAT,
        coalesce_ms: float = 0.0,
        coalesce_bytes: int = 16384,
    ) -> Subscription:
        sub = Subscription(self, stream, outbox, offset, fmt, coalesce_ms, coalesce_bytes)
        stream.listen(self)  # registered before the replay reads anything
        self.subs.setdefault(stream.id, set()).add(sub)
        self._kind(stream.id, fmt.transport, 1)
        if offset > 0:
            self.stats.resumes += 1
        sub.start()
        return sub

    def _remove(self, sub: Subscription) -> None:
        sub.finished.set()
        if sub.on_done is not None:
            done, sub.on_done = sub.on_done, None
            done()
        subs = self.subs.get(sub.stream.id)
        if subs is None:
            return
        if sub in subs:
            subs.discard(sub)
            self._kind(sub.stream.id, sub.fmt.transport, -1)
        if not subs:
            del self.subs[sub.stream.id]
            sub.stream.unlisten(self)

    def count(self, stream_id: str | None = None) -> int:
        if stream_id is not None:
            return len(self.subs.get(stream_id, ()))
        return sum(len(s) for s in self.subs.values())

    # --- storage.Listener ----------------------------------------------------------------------

    def on_chunks(self, stream: StreamHandle, offset: int, chunks: list[bytes]) -> None:
        subs = self.subs.get(stream.id)
        if not subs:
            return
        frames: dict[Format, str] = {}
        a = self.analytics
        if a is None:
            for sub in list(subs):
                sub.on_chunks(offset, chunks, frames)
            return
        t0, n0 = a.run_t0(stream.id), self.stats.frames
        kinds = self._kinds.get(stream.id, {})
        self._run, self._run_bytes, self._run_other = chunks, sum(map(len, chunks)), 0
        self._run_single = len(kinds) == 1
        for sub in list(subs):
            sub.on_chunks(offset, chunks, frames)
        self._run = None
        n = self.stats.frames - n0
        if t0 is not None and n:
            a.lagged(stream.id, t0, n)
        fast = n - self._run_other
        if fast > 0 and self._run_single:
            (transport,) = kinds
            a.delivered_bytes(stream.id, transport, fast * len(chunks), fast * self._run_bytes, False)

    # --- analytics: one call per frame, no-ops without an ``Analytics`` -------------------------

    def tally(self, sub: Subscription, chunks: list[bytes], replay: bool = False, nbytes: int = -1) -> None:
        a = self.analytics
        if a is None:
            return
        if nbytes < 0:
            nbytes = self._run_bytes if chunks is self._run else sum(map(len, chunks))
        if self._run is not None and not replay:
            self._run_other += 1  # a frame of the run counted here, not at its end
        a.delivered_bytes(sub.stream.id, sub.fmt.transport, len(chunks), nbytes, replay)

    def _kind(self, stream_id: str, transport: str, d: int) -> None:
        kinds = self._kinds.setdefault(stream_id, {})
        n = kinds.get(transport, 0) + d
        if n > 0:
            kinds[transport] = n
        else:
            kinds.pop(transport, None)
            if not kinds:
                del self._kinds[stream_id]

    def caught_up(self, sub: Subscription) -> None:
        if self.analytics is not None:
            self.analytics.replay_done(sub.fmt.transport, sub.resumed_at)
        sub.resumed_at = 0.0

    def left(self, sub: Subscription) -> None:
        if self.analytics is not None:
            self.analytics.departed(sub.stream.id, sub.next, sub.fmt.transport)

    def on_end(self, stream: StreamHandle, info: CloseInfo) -> None:
        for sub in list(self.subs.get(stream.id, ())):
            sub.on_end(info)

    def on_gone(self, stream: StreamHandle) -> None:
        for sub in list(self.subs.get(stream.id, ())):
            sub.on_gone()

    def on_reset(self, stream: StreamHandle, epoch: str) -> None:
        for sub in list(self.subs.get(stream.id, ())):
            sub.on_reset(epoch)

    def close_all(self) -> None:
        for subs in list(self.subs.values()):
            for sub in list(subs):
                with contextlib.suppress(Exception):
                    sub.stop()
