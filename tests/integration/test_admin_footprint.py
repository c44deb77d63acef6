"""/admin/stats reports what the file engine takes on disk: allocated bytes beside logical ones."""

from __future__ import annotations

from .conftest import wait_for


async def test_admin_stats_report_allocated_and_logical_bytes(start_hub, session) -> None:
    hub = await start_hub(archive_delay_s=0.0)
    for i in range(4):
        sid = f"chat/1/{i}"
        async with session.put(f"{hub.http}/streams/{sid}") as r:
            assert r.status in (200, 201)
        async with session.post(
            f"{hub.http}/streams/{sid}", json={"data": [f" tok{k}" for k in range(40)]}
        ) as r:
            assert r.status == 200
        async with session.post(f"{hub.http}/streams/{sid}/close", json={"status": "done"}) as r:
            assert r.status == 200
    h = {"Authorization": "Bearer admin-secret"}

    async def stats() -> dict:
        async with session.get(f"{hub.http}/admin/stats", headers=h) as r:
            assert r.status == 200
            return await r.json()

    await wait_for(lambda: hub.hub.store.counters["archived"] == 4, 10)
    await hub.hub.store.footprint()
    st = await stats()
    assert st["archived"] == 4
    assert st["archive_allocated_bytes"] >= st["archived_bytes"] > 0
    assert st["allocated_bytes"] >= st["catalog_allocated_bytes"] > 0
    assert st["footprint_age_s"] >= 0
    for key in ("catalog_wal_allocated_bytes", "catalog_free_bytes", "streams_allocated_bytes"):
        assert isinstance(st[key], int), key
