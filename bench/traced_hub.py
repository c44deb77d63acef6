"""The real hub under tracemalloc, for finding where its memory goes (the hub's code is not touched).

    python -m bench.traced_hub DUMP_DIR serve --port ... (any ``python -m hub`` arguments)

Starts tracemalloc (``RHUB_TRACE_FRAMES`` frames per allocation, default 30) before the hub is even
imported, then runs ``python -m hub`` with the remaining arguments. On SIGUSR1 it writes, into
DUMP_DIR, ``snap-N.tracemalloc`` (a ``tracemalloc.Snapshot``) and ``snap-N.census.json`` (live
GC-tracked objects by type: count and ``sys.getsizeof`` bytes), then ``snap-N.done``, so a reader
waits for that last file. The handler runs on the main thread between two bytecodes of the event
loop, so the heap it sees is consistent. Tracing costs memory and time: RSS figures come from a run
without it (``bench.load`` without ``--trace``).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import linecache
import os
import runpy
import signal
import sys
import sysconfig
import time
import tracemalloc
from collections import Counter
from pathlib import Path
from types import FrameType

from bench.common import ROOT, table


def census() -> dict[str, list[int]]:
    """Live GC-tracked objects by qualified type name: [count, sum of sys.getsizeof]."""
    counts: Counter[str] = Counter()
    sizes: Counter[str] = Counter()
    for o in gc.get_objects():
        t = type(o)
        name = f"{t.__module__}.{t.__qualname__}"
        counts[name] += 1
        sizes[name] += sys.getsizeof(o)
        if isinstance(o, asyncio.Task):  # and which coroutine each task runs
            state = "done, still referenced" if o.done() else "pending"
            task = f"task:{getattr(o.get_coro(), '__qualname__', '?')} ({state})"
            counts[task] += 1
            sizes[task] += sys.getsizeof(o)
    return {k: [counts[k], sizes[k]] for k in counts}


def main() -> None:
    dump_dir = Path(sys.argv[1])
    dump_dir.mkdir(parents=True, exist_ok=True)
    tracemalloc.start(int(os.environ.get("RHUB_TRACE_FRAMES", "30")))
    n = 0

    def dump(signum: int, frame: FrameType | None) -> None:
        nonlocal n
        n += 1
        gc.collect()  # what is left is what is held, not garbage waiting for a cycle collection
        snap = tracemalloc.take_snapshot()
        snap.dump(str(dump_dir / f"snap-{n}.tracemalloc"))
        (dump_dir / f"snap-{n}.census.json").write_text(json.dumps(census()))
        (dump_dir / f"snap-{n}.done").write_text(str(tracemalloc.get_traced_memory()))

    signal.signal(signal.SIGUSR1, dump)
    sys.argv = ["hub", *sys.argv[2:]]
    runpy.run_module("hub", run_name="__main__", alter_sys=True)


# --- the reader's side: ask for a snapshot, then compare two -----------------------------------


async def take(pid: int, dump_dir: Path, n: int, timeout: float = 120.0) -> None:
    """Signal the traced hub ``pid`` for its ``n``-th snapshot and wait until it is written."""
    os.kill(pid, signal.SIGUSR1)
    deadline = time.monotonic() + timeout
    while not (dump_dir / f"snap-{n}.done").exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"the traced hub wrote no snapshot {n} within {timeout:g} s")
        await asyncio.sleep(0.1)


_STDLIB = Path(sysconfig.get_paths()["stdlib"])
_OURS = ("hub/", "storage/")
_NOT_OURS = ("hub/__main__.py",)  # run_app's frame is under everything; it says nothing about a cause


def where(filename: str) -> str:
    """A short name for a source file: ``aiohttp/web_ws.py``, ``hub/ws.py``, ``asyncio/tasks.py``."""
    if "/site-packages/" in filename:
        return filename.split("/site-packages/", 1)[1]
    for base in (ROOT, _STDLIB):
        with contextlib.suppress(ValueError):
            return str(Path(filename).relative_to(base))
    return filename


def group(name: str) -> str:
    """What a file (as ``where`` names it) belongs to: ``hub``, ``storage``, ``aiohttp``, ``asyncio``,
    another package by its name, ``stdlib`` for a top-level stdlib module, ``other`` for the rest."""
    if name.startswith("/"):
        return "other"
    if "/" not in name:
        return "stdlib"
    return name.split("/", 1)[0]


# Roles for the summary table, first match wins: (role, files it covers (prefixes), or None for "any
# file"; words the allocating source line must contain, or None). The by-line table is the ground
# truth; these rules only sum it up, and a line they do not know lands in "other".
ROLES: list[tuple[str, tuple[str, ...] | None, tuple[str, ...] | None]] = [
    (
        "tasks and coroutine frames (any await chain, create_task)",
        None,
        ("await ", "async for", "create_task"),
    ),
    ("tasks and coroutine frames (any await chain, create_task)", ("asyncio/base_events.py",), None),
    ("asyncio.Event/Lock/Semaphore waiter deques", ("asyncio/locks.py",), None),
    ("asyncio task registry (WeakSet of all tasks)", ("_weakrefset.py", "weakref.py"), None),
    (
        "aiohttp: the HTTP request and its handler, kept for the connection's life",
        (
            "aiohttp/web_protocol.py",
            "aiohttp/web_server.py",
            "aiohttp/web_request.py",
            "aiohttp/web_app.py",
            "aiohttp/web_urldispatcher.py",
            "aiohttp/helpers.py",
        ),
        None,
    ),
    ("aiohttp: permessage-deflate (zlib compressor, decompressor)", ("aiohttp/compression_utils.py",), None),
    (
        "aiohttp: the WebSocket (response, reader queue, frame parser, writer)",
        ("aiohttp/web_ws.py", "aiohttp/_websocket/", "aiohttp/web_response.py"),
        None,
    ),
    ("asyncio: the socket transport and its callbacks", ("asyncio/", "socket.py"), None),
    ("ours: Connection (hub/protocols/native/ws.py)", ("hub/protocols/native/ws.py", "hub/ws.py"), None),
    (
        "ours: Outbox and Subscription (hub/core/outbox.py, fanout.py)",
        ("hub/core/outbox.py", "hub/core/fanout.py", "hub/fanout.py"),
        None,
    ),
    ("ours: the rest of hub/ and storage/", ("hub/", "storage/"), None),
]


def role(name: str, src: str) -> str:
    for label, files, words in ROLES:
        if (files is None or name.startswith(files)) and (words is None or any(w in src for w in words)):
            return label
    return "other"


def _ours(name: str) -> bool:
    return name.startswith(_OURS) and not name.startswith(_NOT_OURS)


def breakdown(dump_dir: Path, a: int, b: int, per: int, top: int = 14) -> str:
    """Tables of what snapshot ``b`` holds beyond snapshot ``a``, divided by ``per`` connections."""
    skip = [tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, __file__)]
    s0 = tracemalloc.Snapshot.load(str(dump_dir / f"snap-{a}.tracemalloc")).filter_traces(skip)
    s1 = tracemalloc.Snapshot.load(str(dump_dir / f"snap-{b}.tracemalloc")).filter_traces(skip)
    diffs = s1.compare_to(s0, "traceback")
    by_file: Counter[str] = Counter()
    by_line: Counter[str] = Counter()
    by_ours: Counter[str] = Counter()
    by_role: Counter[str] = Counter()
    blocks: Counter[str] = Counter()
    for d in diffs:
        frames = list(d.traceback)  # oldest first, the allocating frame last
        inner = frames[-1]
        f = where(inner.filename)
        by_file[f] += d.size_diff
        blocks[f] += d.count_diff
        src = linecache.getline(inner.filename, inner.lineno).strip()[:60]
        by_line[f"{f}:{inner.lineno}  {src}"] += d.size_diff
        by_role[role(f, src)] += d.size_diff
        ours = next((fr for fr in reversed(frames) if _ours(where(fr.filename))), None)
        if ours is None:
            by_ours["(no hub/storage frame: aiohttp and asyncio on their own)"] += d.size_diff
        else:
            code = linecache.getline(ours.filename, ours.lineno).strip()[:60]
            by_ours[f"{where(ours.filename)}:{ours.lineno}  {code}"] += d.size_diff
    total = sum(by_file.values())
    groups: Counter[str] = Counter()
    for f, v in by_file.items():
        groups[group(f)] += v

    def kb(v: float) -> str:
        return f"{v / per / 1024:,.2f}"

    def share(v: float) -> str:
        return f"{100 * v / total:.0f}%" if total else "-"

    out = [
        table(
            f"traced Python memory per connection, by library ({per:,} connections; total {kb(total)} KiB)",
            ["allocated in", "KiB/conn", "share"],
            [[g, kb(v), share(v)] for g, v in groups.most_common() if abs(v) / per >= 5],
        ),
        table(
            "by role (bench.traced_hub.ROLES applied to the allocating lines below)",
            ["role", "KiB/conn", "share"],
            [[k, kb(v), share(v)] for k, v in by_role.most_common() if abs(v) / per >= 5],
        ),
        table(
            "by allocating file (the innermost frame)",
            ["file", "KiB/conn", "blocks/conn", "share"],
            [[f, kb(v), f"{blocks[f] / per:.1f}", share(v)] for f, v in by_file.most_common(top)],
        ),
        table(
            "by allocating line",
            ["line", "KiB/conn", "share"],
            [[k, kb(v), share(v)] for k, v in by_line.most_common(top)],
        ),
        table(
            "by the innermost hub/ or storage/ frame on the stack (what of ours caused it)",
            ["our line", "KiB/conn", "share"],
            [[k, kb(v), share(v)] for k, v in by_ours.most_common(top)],
        ),
    ]
    c0 = json.loads((dump_dir / f"snap-{a}.census.json").read_text())
    c1 = json.loads((dump_dir / f"snap-{b}.census.json").read_text())
    dc = {k: (v[0] - c0.get(k, [0, 0])[0], v[1] - c0.get(k, [0, 0])[1]) for k, v in c1.items()}
    types = sorted(((k, v) for k, v in dc.items() if not k.startswith("task:")), key=lambda kv: -kv[1][1])
    out.append(
        table(
            "live GC-tracked objects per connection, by type (gc.get_objects, sys.getsizeof: the object "
            "itself, not what it points to)",
            ["type", "objects/conn", "B/conn"],
            [[k, f"{n / per:.2f}", f"{sz / per:,.0f}"] for k, (n, sz) in types[:top]],
        )
    )
    tasks = sorted(
        ((k[5:], v) for k, v in dc.items() if k.startswith("task:") and v[0]), key=lambda kv: -kv[1][0]
    )
    out.append(
        table(
            "asyncio tasks per connection, by the coroutine they run",
            ["coroutine", "tasks/conn"],
            [[k, f"{n / per:.2f}"] for k, (n, _) in tasks[:top]],
        )
    )
    return "\n".join(out)


if __name__ == "__main__":
    main()
