"""Operating cometbox with the ecosystem's own tools: /metrics through the
prometheus-client parser, presence and upstream events through redis-py's
pubsub() (RESP2 and RESP3) and node-redis' subscribe."""
import asyncio
import json
import pathlib
import re
import subprocess
import time

import httpx
import jwt
import pytest
import redis
import websockets
from prometheus_client.parser import text_string_to_metric_families

ROOT = pathlib.Path(__file__).resolve().parents[2]
NODE_MODULES = ROOT / "tests" / "node" / "node_modules"


def metrics_url(gw):
    deadline = time.time() + 10
    while time.time() < deadline:
        m = re.search(r"metrics listener on (\S+):", gw.log())
        if m:
            return f"http://{m.group(1)}"
        time.sleep(0.02)
    raise AssertionError(gw.log())


def scrape(base):
    text = httpx.get(base + "/metrics", timeout=5).text
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            key = s.name + "".join(f"{{{k}={v}}}" for k, v in sorted(s.labels.items()))
            samples[key] = s.value
    return samples


def test_metrics_parse_with_prometheus_client_and_counters_move(start_gateway):
    gw = start_gateway('metrics.listen = "127.0.0.1:0"\nmailbox.poll-timeout = 1')
    base = metrics_url(gw)
    before = scrape(base)
    assert before["cometbox_build_info{version=0.1.0}"] == 1
    assert before["cometbox_messages_published_total"] == 0
    r = redis.Redis(unix_socket_path=gw.socket)
    for i in range(5):
        r.publish("ops", f"m{i}")
    body = httpx.get(gw.url("/mailbox/ops"), timeout=5).json()
    assert len(body["messages"]) == 5
    httpx.get(gw.url(f"/mailbox/ops?since={body['cursor']}"), timeout=5)
    time.sleep(0.6)  # per-worker counts are folded every 250 ms
    after = scrape(base)
    assert after["cometbox_messages_published_total"] == 5
    assert after["cometbox_messages_delivered_total"] >= 5
    assert after["cometbox_backend_commands_total{command=publish}"] == 5
    assert after["cometbox_http_requests_total"] >= 2
    assert after["cometbox_resumes_total{result=recovered}"] == 1
    assert after["cometbox_http_sent_bytes_total"] > before["cometbox_http_sent_bytes_total"]
    assert after["cometbox_delivery_latency_seconds_count"] >= 0
    health = httpx.get(base + "/health", timeout=5)
    assert health.status_code == 200 and health.json()["status"] == "ok"
    # INFO carries the same numbers.
    info = r.info()
    assert info["total_deliveries"] == after["cometbox_messages_delivered_total"]


def next_event(pubsub, timeout=5):
    deadline = time.time() + timeout
    while time.time() < deadline:
        m = pubsub.get_message(timeout=0.2)
        if m and m["type"] in ("message", "pmessage"):
            return m
    raise AssertionError("no event")


@pytest.mark.parametrize("protocol", [2, 3])
def test_redis_py_pubsub_receives_join_and_leave(start_gateway, protocol):
    gw = start_gateway()
    r = redis.Redis(unix_socket_path=gw.socket, protocol=protocol)
    ps = r.pubsub()
    ps.subscribe("__cometbox:events")
    ps.psubscribe("__cometbox:events:room:*")
    # redis-py does not wait for the confirmations: a visit before the
    # gateway has taken PSUBSCRIBE would make no pmessage.
    confirmed = set()
    deadline = time.time() + 5
    while len(confirmed) < 2 and time.time() < deadline:
        m = ps.get_message(timeout=0.2)
        if m and m["type"] in ("subscribe", "psubscribe"):
            confirmed.add(m["type"])
    assert confirmed == {"subscribe", "psubscribe"}

    async def visit():
        async with websockets.connect(gw.ws_url("/mailbox/room:7")):
            await asyncio.sleep(0.3)

    asyncio.run(visit())
    got = [next_event(ps) for _ in range(4)]
    joins = [json.loads(m["data"]) for m in got if b"join" in m["data"]]
    leaves = [json.loads(m["data"]) for m in got if b"leave" in m["data"]]
    assert {m["type"] for m in got} == {"message", "pmessage"}
    assert joins[0] == {"event": "join", "mailbox": "room:7", "transport": "websocket", "subject": None}
    assert leaves[0]["event"] == "leave" and leaves[0]["mailbox"] == "room:7"
    ps.close()


def test_upstream_frames_reach_a_redis_py_subscriber_with_the_token_subject(start_gateway, tmp_path):
    secret = "an-interop-secret-of-at-least-32-bytes!!"
    (tmp_path / "jwt.secret").write_text(secret)
    gw = start_gateway(
        f'mailbox.upstream = "enable"\nauth.required = "enable"\n'
        f'auth.jwt-secret-file = "{tmp_path / "jwt.secret"}"'
    )
    exp = int(time.time()) + 600
    token = jwt.encode(
        {"exp": exp, "sub": "alice", "mailboxes": ["chat:*"], "publish": ["chat:lobby"]}, secret, "HS256"
    )
    r = redis.Redis(unix_socket_path=gw.socket)
    ps = r.pubsub(ignore_subscribe_messages=True)
    ps.subscribe("__cometbox:upstream")

    async def say():
        async with websockets.connect(gw.ws_url(f"/mailbox/chat:lobby,chat:news?token={token}")) as ws:
            await ws.send(json.dumps({"mailbox": "chat:news", "data": "read-only here"}))
            await ws.send(json.dumps({"mailbox": "chat:lobby", "data": "hi all"}))
            await asyncio.sleep(0.3)

    asyncio.run(say())
    m = next_event(ps)
    assert m["channel"] == b"__cometbox:upstream"
    assert json.loads(m["data"]) == {"mailbox": "chat:lobby", "subject": "alice", "data": "hi all"}
    assert ps.get_message(timeout=0.3) is None, "chat:news is not granted for publishing"


def test_posted_bodies_reach_a_redis_py_subscriber(start_gateway, tmp_path):
    secret = "an-interop-secret-of-at-least-32-bytes!!"
    (tmp_path / "jwt.secret").write_text(secret)
    gw = start_gateway(
        f'mailbox.upstream = "enable"\nauth.required = "enable"\n'
        f'auth.jwt-secret-file = "{tmp_path / "jwt.secret"}"'
    )
    token = jwt.encode(
        {"exp": int(time.time()) + 600, "sub": "alice", "publish": ["chat:lobby"]}, secret, "HS256"
    )
    r = redis.Redis(unix_socket_path=gw.socket)
    ps = r.pubsub(ignore_subscribe_messages=True)
    ps.subscribe("__cometbox:upstream")
    auth = {"Authorization": f"Bearer {token}"}
    body = json.dumps({"text": "hi all", "n": 1})
    resp = httpx.post(gw.url("/mailbox/chat:lobby"), content=body, headers=auth, timeout=5)
    assert resp.status_code == 204, resp.text
    m = next_event(ps)
    assert m["channel"] == b"__cometbox:upstream"
    assert json.loads(m["data"]) == {"mailbox": "chat:lobby", "subject": "alice", "data": body}
    refused = httpx.post(gw.url("/mailbox/chat:news"), content="x", headers=auth, timeout=5)
    assert refused.status_code == 403, "chat:news is not granted for publishing"
    assert ps.get_message(timeout=0.3) is None


NODE_SCRIPT = r"""
import { createClient } from "redis";
const [socket, proto] = process.argv.slice(2);
const client = createClient({ socket: { path: socket }, RESP: Number(proto) });
await client.connect();
const seen = [];
await client.subscribe("__cometbox:events", (message) => {
  seen.push(JSON.parse(message));
  if (seen.length === 2) { console.log(JSON.stringify(seen)); process.exit(0); }
});
console.log("subscribed");
setTimeout(() => { console.error("timeout", JSON.stringify(seen)); process.exit(1); }, 10000);
"""


@pytest.mark.parametrize("proto", [2, 3])
def test_node_redis_subscribe_receives_join_and_leave(start_gateway, tmp_path, proto):
    if not (NODE_MODULES / "redis").exists():
        pytest.skip("npm ci --prefix tests/node first (tests/run-all.sh does)")
    gw = start_gateway()
    script = ROOT / "tests" / "node" / f"presence-{proto}.tmp.mjs"
    script.write_text(NODE_SCRIPT)
    try:
        proc = subprocess.Popen(
            ["node", str(script), gw.socket, str(proto)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        assert proc.stdout.readline().strip() == "subscribed"

        async def visit():
            async with websockets.connect(gw.ws_url("/mailbox/desk:1")):
                await asyncio.sleep(0.3)

        asyncio.run(visit())
        out, err = proc.communicate(timeout=15)
        assert proc.returncode == 0, err
        events = json.loads(out)
        assert [e["event"] for e in events] == ["join", "leave"]
        assert all(e["mailbox"] == "desk:1" for e in events)
    finally:
        script.unlink(missing_ok=True)
