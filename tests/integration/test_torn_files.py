"""Torn and corrupt files under the running hub: it starts, serves the valid prefix, reports repairs in
/admin/stats, and never serves corrupt bytes as data."""

from __future__ import annotations

from pathlib import Path

from storage import ids

from .conftest import wait_for


async def _write(session, base: str, sid: str, n: int, close: bool) -> list[str]:
    chunks = [f"{sid}:{i:04d};" for i in range(n)]
    async with session.put(f"{base}/streams/{sid}"):
        pass
    for i in range(0, n, 10):
        async with session.post(f"{base}/streams/{sid}", json={"data": chunks[i : i + 10]}) as r:
            assert r.status == 200
    if close:
        async with session.post(f"{base}/streams/{sid}/close", json={"status": "done"}) as r:
            assert r.status == 200
    return chunks


async def _read(session, base: str, sid: str, start: int = 0) -> tuple[int, dict]:
    async with session.get(f"{base}/streams/{sid}?from={start}&limit=10000") as r:
        return r.status, await r.json()


async def test_hub_recovers_torn_tail_missing_index_and_mid_file_corruption(start_hub, session, tmp_path):
    data = tmp_path / "d"
    # segment files are what this test tears, so finished answers stay in them (no archive)
    hub = await start_hub(data_dir=data, segment_bytes=4096, archive_delay_s=None)
    open_chunks = await _write(session, hub.http, "torn/open", 300, close=False)
    sealed_chunks = await _write(session, hub.http, "torn/sealed", 300, close=True)
    await wait_for(
        lambda: all(s.sealed for s in hub.hub.store.get("torn/sealed").log.segments), what="sealing"
    )
    await hub.server.close()
    (data / "CLEAN_SHUTDOWN").unlink()  # as if the hub had been killed

    d_open = ids.stream_dir(data, "torn/open")
    tail = sorted(d_open.glob("*.log"))[-1]
    size = tail.stat().st_size
    with open(tail, "r+b") as f:
        f.truncate(size - 7)  # a torn last record
    d_sealed = ids.stream_dir(data, "torn/sealed")
    zlogs = sorted(d_sealed.glob("*.zlog"))
    Path(str(zlogs[0]).replace(".zlog", ".idx")).unlink()  # a lost index
    middle = zlogs[len(zlogs) // 2]
    raw = bytearray(middle.read_bytes())
    raw[40] ^= 0x10  # a bit flip inside the first block of a middle segment
    middle.write_bytes(bytes(raw))

    hub2 = await start_hub(data_dir=data, segment_bytes=4096, archive_delay_s=None)
    h = hub2.admin_headers()

    async def repairs() -> int:
        async with session.get(f"{hub2.http}/admin/stats", headers=h) as r:
            return int((await r.json())["repairs"])

    for _ in range(200):  # background recovery after an unclean shutdown
        if await repairs() >= 3:
            break
        await wait_for(lambda: True, 0.01)
    assert await repairs() >= 3

    status, body = await _read(session, hub2.http, "torn/open")
    assert status == 200
    got = body["chunks"]
    assert got == open_chunks[: len(got)] and len(got) >= 290  # exactly a prefix: the torn record is gone
    async with session.post(f"{hub2.http}/streams/torn/open", json={"data": "next"}) as r:
        assert (await r.json())["offset"] == len(got)  # appends continue right after the valid prefix

    bad = hub2.hub.store.get("torn/sealed").log.segments[len(zlogs) // 2]
    status, body = await _read(session, hub2.http, "torn/sealed", bad.base)
    assert status == 500 and body["error"]["code"] == "corrupt_data"
    status, body = await _read(session, hub2.http, "torn/sealed", 0)
    assert (
        status == 200 and body["chunks"] == sealed_chunks[: bad.base]
    )  # served up to the damage, no further
    status, body = await _read(session, hub2.http, "torn/sealed", bad.end)
    assert status == 200 and body["chunks"] == sealed_chunks[bad.end :]  # and after it
    async with session.get(f"{hub2.http}/admin/streams/torn/sealed", headers=h) as r:
        info = await r.json()
    assert info["status"] == "done" and any("index" in n for n in info["repair_notes"])
