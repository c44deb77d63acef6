"""The Python client's edges (issue 12, item 7): a Subscriber can wait for a stream that does not exist
yet; a reset reaches the caller instead of a silent restart from 0; a token can be a callable, asked
again on every reconnect; an expired token is refused on append, and a refused Producer says
``token_expired`` or ``unauthorized``; empty deltas are skipped without spending a seq."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from hub.client import ClientError, Producer, Subscriber
from hub.client.websocket import StreamReset

from .conftest import wait_for

SECRET = "client-lifecycle-secret-0123456789abcdef"


async def test_a_subscriber_waits_for_a_stream_created_later(start_hub) -> None:
    hub = await start_hub()
    sub = Subscriber(hub.ws_url, "later/1", wait_s=10)
    reading = asyncio.create_task(sub.text())
    # the subscriber has asked at least once and been told "not found", and is still waiting
    await wait_for(lambda: hub.hub.counters.errors >= 1, 10, "the first stream_not_found")
    assert not reading.done()
    async with Producer(hub.ws_url, "later/1") as p:
        await p.append("hello ")
        await p.append("world")
    assert await asyncio.wait_for(reading, 10) == "hello world" and sub.status == "done"
    with pytest.raises(ClientError) as e:  # without wait_s: at once
        await Subscriber(hub.ws_url, "never/1").text()
    assert e.value.code == "stream_not_found"


async def test_a_reset_raises_or_reaches_on_reset(start_hub) -> None:
    hub = await start_hub()
    async with Producer(hub.ws_url, "reset/1") as p:
        for t in ("a", "b", "c"):
            await p.append(t)
    stale = Subscriber(hub.ws_url, "reset/1", from_=2)
    stale.epoch = "an-epoch-the-hub-has-not"  # as after the hub's recovery dropped data
    with pytest.raises(StreamReset) as e:
        await stale.text()
    real = (await hub.hub.get("reset/1")).epoch
    assert e.value.epoch == real and e.value.code == "reset"
    seen: list[str] = []
    again = Subscriber(hub.ws_url, "reset/1", from_=2, on_reset=seen.append)
    again.epoch = "an-epoch-the-hub-has-not"
    assert await again.text() == "abc" and seen == [real]  # told, then the whole stream from 0


async def test_a_callable_token_is_asked_again_when_the_old_one_expires(start_hub) -> None:
    hub = await start_hub(jwt_secret=SECRET)
    asked: list[int] = []

    def token() -> str:
        asked.append(1)
        return hub.hub.auth.mint(write=["tok/*"], read=["tok/*"], ttl=1 if len(asked) == 1 else 600)

    async with Producer(hub.ws_url, "tok/1", token=token) as p:
        await p.append("before ")
        exp = int(time.time()) + 2  # the first token's exp (whole seconds) has surely passed then
        while time.time() < exp:
            await asyncio.sleep(0.1)  # wall-clock expiry, not a race with the hub
        assert await (await p.append("after")) == 1  # refused token_expired, reconnected with a new token
    assert len(asked) == 2 and p.reconnects >= 1
    s = await hub.hub.get("tok/1")
    assert s.status == "done" and [c.decode() for c in await hub.hub.read(s, 0)] == ["before ", "after"]


async def test_a_fixed_token_that_expires_is_refused_on_append(start_hub) -> None:
    hub = await start_hub(jwt_secret=SECRET)
    token = hub.hub.auth.mint(write=["tok/*"], ttl=1)
    p = Producer(hub.ws_url, "tok/2", token=token)
    with pytest.raises(ClientError) as e:
        async with p:
            await p.append("x")
            exp = int(time.time()) + 2
            while time.time() < exp:
                await asyncio.sleep(0.1)
            await p.append("y")
    assert e.value.code == "token_expired"
    assert p._ws is not None and p._ws.closed and p._session is not None and p._session.closed
    assert [c.decode() for c in await hub.hub.read("tok/2", 0)] == ["x"]


@pytest.mark.parametrize(("kind", "code"), [("expired", "token_expired"), ("bad", "unauthorized")])
async def test_a_refused_producer_says_why_and_closes_its_session(start_hub, kind: str, code: str) -> None:
    hub = await start_hub(jwt_secret=SECRET)
    token = hub.hub.auth.mint(write=["tok/*"], ttl=-10) if kind == "expired" else "not-a-token"
    p = Producer(hub.ws_url, "tok/3", token=token, max_attempts=2)
    with pytest.raises(ClientError) as e:
        async with p:
            pass
    assert e.value.code == code
    assert p._session is not None and p._session.closed


async def test_empty_deltas_are_skipped_without_a_seq(start_hub) -> None:
    hub = await start_hub()
    async with aiohttp.ClientSession() as session, Producer(hub.ws_url, "e/1", session=session) as p:
        # appends are pipelined: each returns a future of its offset at once
        assert await (await p.append("a")) == 0
        assert (
            await (await p.append("")) == 1 and await (await p.append([])) == 1
        )  # nothing sent, no seq spent
        assert await (await p.append("b")) == 1  # so no sequence_gap
    assert [c.decode() for c in await hub.hub.read("e/1", 0)] == ["a", "b"]
