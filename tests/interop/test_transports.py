"""SSE and WebSocket through third-party clients: httpx-sse and websockets."""
import asyncio
import json
import threading
import time

import httpx
import redis
import websockets
from httpx_sse import connect_sse


def publisher(gw):
    # redis-py 8 speaks RESP3 by default: HELLO 3 on connect.
    return redis.Redis(unix_socket_path=gw.socket)


def wait_subscribers(r, mailbox, n, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        (_, count), = r.pubsub_numsub(mailbox)
        if count == n:
            return
        time.sleep(0.01)
    raise AssertionError(f"{mailbox} never reached {n} subscribers")


def messages(source):
    """Events as a browser dispatches them: the spec drops events with empty
    data (httpx-sse also yields the block that only sets `retry:`)."""
    return (e for e in source.iter_sse() if e.data or e.id)


def test_sse_with_httpx_sse_resumes_from_last_event_id(gateway):
    r = publisher(gateway)
    r.publish("news", "retained")
    received = []
    with httpx.Client(timeout=10) as client:
        with connect_sse(client, "GET", gateway.url("/mailbox/news")) as source:
            assert source.response.headers["content-type"].startswith("text/event-stream")
            events = messages(source)
            first = next(events)
            received.append(first)
            wait_subscribers(r, "news", 1)
            r.publish("news", "multi\nline")
            second = next(events)
            received.append(second)
    assert [e.data for e in received] == ["retained", "multi\nline"]
    assert received[0].id and received[1].id and received[0].id < received[1].id
    r.publish("news", "while away")
    with httpx.Client(timeout=10) as client:
        headers = {"Last-Event-ID": received[1].id}
        with connect_sse(client, "GET", gateway.url("/mailbox/news"), headers=headers) as source:
            event = next(messages(source))
    assert event.data == "while away"


def test_websocket_with_websockets_library(gateway):
    r = publisher(gateway)
    r.publish("chat", "hello")

    async def scenario():
        async with websockets.connect(gateway.ws_url("/mailbox/chat")) as ws:
            first = json.loads(await ws.recv())
            assert first["data"] == "hello"
            await asyncio.to_thread(wait_subscribers, r, "chat", 1)
            count = await asyncio.to_thread(r.publish, "chat", json.dumps({"text": "live"}))
            assert count == 1
            second = json.loads(await ws.recv())
            assert json.loads(second["data"]) == {"text": "live"}
            # Client frames are accepted and ignored; pings are answered.
            await ws.send("ignored")
            pong = await ws.ping(b"probe")
            await asyncio.wait_for(pong, 5)
            # Resume from the first id on a new connection: only the second.
            async with websockets.connect(gateway.ws_url(f"/mailbox/chat?since={first['id']}")) as again:
                resumed = json.loads(await again.recv())
                assert resumed["id"] == second["id"]
        await asyncio.to_thread(wait_subscribers, r, "chat", 0)

    asyncio.run(scenario())
