"""The HTTP API answers like the WebSocket and the Durable Streams endpoints (issue 12, item 8): a body
that is neither JSON nor text is refused (415) rather than stored, a repeated PUT with other settings is
409, ``""`` and ``[]`` are refused alike on both protocols, and a Producer-Seq gap is ``sequence_gap``."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from .conftest import WS


async def error_of(r: aiohttp.ClientResponse) -> tuple[int, str, str]:
    body = await r.json()
    return r.status, body["error"]["code"], body["error"]["message"]


async def chunks(session: aiohttp.ClientSession, base: str, sid: str) -> list[str]:
    async with session.get(f"{base}/streams/{sid}?from=0") as r:
        out: list[str] = (await r.json())["chunks"]
        return out


@pytest.mark.parametrize(
    "headers",
    [
        {"Content-Type": "application/x-www-form-urlencoded"},  # curl -d
        {"Content-Type": "multipart/form-data; boundary=x"},
        {"Content-Type": "application/octet-stream"},
        {},  # no Content-Type at all
    ],
)
async def test_a_body_that_is_not_json_or_text_is_415_and_stores_nothing(start_hub, session, headers) -> None:
    hub = await start_hub()
    async with session.post(f"{hub.http}/streams/c/1?create=1", json={"data": "first"}) as r:
        assert r.status == 200
    async with session.post(f"{hub.http}/streams/c/1", data=b"data=form", headers=headers) as r:
        status, code, _ = await error_of(r)
    assert (status, code) == (415, "unsupported_media_type")
    async with session.post(
        f"{hub.http}/streams/c/1", data=b"plain", headers={"Content-Type": "text/plain"}
    ) as r:
        assert r.status == 200 and (await r.json())["offset"] == 1  # the connection still works
    assert await chunks(session, hub.http, "c/1") == ["first", "plain"]


async def test_a_second_put_with_other_settings_is_409(start_hub, session) -> None:
    hub = await start_hub()
    u = f"{hub.http}/streams/p/1"
    async with session.put(u, json={"ttl": 60, "labels": {"chat": "a"}}) as r:
        assert r.status == 201
    for same in ({"ttl": 60, "labels": {"chat": "a"}}, {"ttl": 60}, {}):
        async with session.put(u, json=same) as r:
            assert r.status == 200, same  # idempotent: nothing it says differs
    for other in ({"ttl": 61}, {"labels": {"chat": "b"}}, {"ttl": None}):
        async with session.put(u, json=other) as r:
            status, code, message = await error_of(r)
            assert (status, code) == (409, "stream_exists"), other
            assert next(iter(other)) in message


async def test_empty_string_and_empty_list_answer_alike_on_http_and_websocket(
    start_hub, session, connect
) -> None:
    hub = await start_hub()
    async with session.put(f"{hub.http}/streams/e/1") as r:
        assert r.status == 201
    answers: list[tuple[int, str, str]] = []
    for data in ("", []):
        async with session.post(f"{hub.http}/streams/e/1", json={"data": data}) as r:
            answers.append(await error_of(r))
    async with session.post(f"{hub.http}/streams/e/1", data=b"", headers={"Content-Type": "text/plain"}) as r:
        answers.append(await error_of(r))
    assert len(set(answers)) == 1 and answers[0][:2] == (400, "bad_request"), answers
    ws: WS = await connect(hub.ws_url)
    frames: list[dict[str, Any]] = []
    for i, data in enumerate(("", [])):
        await ws.send(op="append", stream="e/1", data=data, id=i)
        frames.append(await ws.recv_op("error"))
    assert {(f["code"], f["message"]) for f in frames} == {answers[0][1:]}
    assert await chunks(session, hub.http, "e/1") == []


async def test_a_producer_seq_gap_is_sequence_gap_on_http_as_on_the_websocket(
    start_hub, session, connect
) -> None:
    hub = await start_hub()
    u = f"{hub.http}/streams/g/1?create=1"
    for seq in (0, 1):
        async with session.post(
            u, json={"data": f"s{seq}"}, headers={"Producer-Id": "p", "Producer-Seq": str(seq)}
        ) as r:
            assert r.status == 200
    async with session.post(u, json={"data": "s3"}, headers={"Producer-Id": "p", "Producer-Seq": "3"}) as r:
        http_gap = await error_of(r)
    assert http_gap[:2] == (409, "sequence_gap")
    ws: WS = await connect(hub.ws_url)
    await ws.send(op="append", stream="g/1", data="w", producer="p", seq=5, id=1)
    assert (await ws.recv_op("error"))["code"] == "sequence_gap"
    assert await chunks(session, hub.http, "g/1") == ["s0", "s1"]
