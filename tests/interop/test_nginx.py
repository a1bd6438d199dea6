"""The shipped nginx snippet (backend-examples/nginx/nginx-site.conf), run in
Debian's nginx-light in front of the real gateway: long-poll, Server-Sent
Events without buffering, WebSocket, and the client's URLs."""
import asyncio
import json
import pathlib
import shutil
import socket
import subprocess
import threading
import time

import httpx
import pytest
import redis
import websockets

ROOT = pathlib.Path(__file__).resolve().parents[2]
SNIPPET = ROOT / "backend-examples" / "nginx" / "nginx-site.conf"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Nginx:
    """nginx in the foreground, in a directory of its own, with the snippet
    inside a server { } and the map the snippet asks for in http { }."""

    def __init__(self, tmp_path, gateway_addr):
        snippet = SNIPPET.read_text()
        assert "http://127.0.0.1:8080" in snippet
        snippet = snippet.replace("http://127.0.0.1:8080", f"http://{gateway_addr}")
        self.port = free_port()
        d = tmp_path / "nginx"
        d.mkdir()
        temp = "\n".join(f"    {k}_temp_path {d}/{k};" for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        (d / "nginx.conf").write_text(
            f"""daemon off;
master_process off;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 256; }}
http {{
    access_log off;
{temp}
    map $http_upgrade $connection_upgrade {{
        default upgrade;
        ''      '';
    }}
    server {{
        listen 127.0.0.1:{self.port};
{snippet}
    }}
}}
"""
        )
        self.dir = d
        self.proc = subprocess.Popen(
            [NGINX, "-p", str(d), "-c", str(d / "nginx.conf"), "-e", str(d / "error.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        deadline = time.time() + 10
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    break
            if self.proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"nginx did not start: {self.proc.stderr.read().decode(errors='replace')}")
            time.sleep(0.02)
        self.base = f"http://127.0.0.1:{self.port}"

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture
def nginx(gateway, tmp_path):
    if not pathlib.Path(NGINX).exists():
        pytest.fail("nginx is missing: apt-get install nginx-light (tests/run-all.sh does, as root)")
    n = Nginx(tmp_path, gateway.addr)
    yield n
    n.stop()


def wait_subscribers(r, mailbox, n, timeout=10):
    deadline = time.time() + timeout
    while r.pubsub_numsub(mailbox)[0][1] != n:
        assert time.time() < deadline, f"{mailbox} never had {n} subscribers"
        time.sleep(0.005)


def test_long_poll_through_nginx(gateway, nginx):
    r = redis.Redis(unix_socket_path=gateway.socket)
    result = {}
    t = threading.Thread(target=lambda: result.update(resp=httpx.get(nginx.base + "/mailbox/lp", timeout=30)))
    t.start()
    wait_subscribers(r, "lp", 1)
    assert r.publish("lp", '{"text":"via nginx"}') == 1
    t.join(30)
    resp = result["resp"]
    assert resp.status_code == 200 and resp.headers["server"].startswith("nginx")
    assert [m["data"] for m in resp.json()["messages"]] == ['{"text":"via nginx"}']


def test_sse_through_nginx_is_not_buffered(gateway, nginx):
    # A raw socket, so nothing on the client side buffers either: the bytes
    # of the event must arrive within 100 ms of the PUBLISH. Accept-Encoding
    # as a browser sends it: a compressing proxy would hold events back.
    r = redis.Redis(unix_socket_path=gateway.socket)
    with socket.create_connection(("127.0.0.1", nginx.port), timeout=10) as s:
        s.sendall(
            b"GET /mailbox/sse HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n"
            b"Accept-Encoding: gzip, deflate, br\r\n\r\n"
        )
        seen = b""
        while b"\r\n\r\n" not in seen:
            seen += s.recv(65536)
        head = seen.split(b"\r\n\r\n")[0].decode().lower()
        assert head.startswith("http/1.1 200") and "content-type: text/event-stream" in head
        wait_subscribers(r, "sse", 1)
        for i in range(5):
            payload = f"event {i}".encode()
            start = time.monotonic()
            assert r.publish("sse", payload) == 1
            s.settimeout(2)
            while b"data: " + payload not in seen:
                try:
                    seen += s.recv(65536)
                except socket.timeout:
                    pytest.fail(f"event {i} had not come through nginx after 2 s: buffered?")
            elapsed = time.monotonic() - start
            assert elapsed < 0.1, f"event {i} took {elapsed * 1000:.0f} ms through nginx: buffered?"


def test_websocket_through_nginx(gateway, nginx):
    r = redis.Redis(unix_socket_path=gateway.socket)
    r.publish("ws", "retained")

    async def scenario():
        async with websockets.connect(f"ws://127.0.0.1:{nginx.port}/mailbox/ws") as ws:
            first = json.loads(await ws.recv())
            assert first["data"] == "retained"
            await asyncio.to_thread(wait_subscribers, r, "ws", 1)
            assert await asyncio.to_thread(r.publish, "ws", "live") == 1
            second = json.loads(await asyncio.wait_for(ws.recv(), 5))
            assert second["data"] == "live"
            await asyncio.wait_for(await ws.ping(b"probe"), 5)

    asyncio.run(scenario())


@pytest.mark.parametrize("path", ["/cometbox.js", "/cometbox.mjs", "/cometbox-0.1.0.js"])
def test_client_urls_through_nginx(gateway, nginx, path):
    # Whatever the gateway answers for the client's URLs, nginx passes on.
    direct = httpx.get(gateway.url(path), timeout=10)
    proxied = httpx.get(nginx.base + path, timeout=10)
    assert proxied.headers["server"].startswith("nginx")
    assert (proxied.status_code, proxied.content) == (direct.status_code, direct.content)
    assert proxied.status_code == 200
    assert "cometbox" in proxied.text and "subscribe" in proxied.text


def test_nginx_keeps_other_paths_to_itself(gateway, nginx):
    # The regex location is anchored: no other file reaches the gateway.
    for path in ("/cometbox.json", "/cometbox-x.js", "/static/cometbox.js"):
        resp = httpx.get(nginx.base + path, timeout=10)
        assert resp.status_code == 404 and "nginx" in resp.text, path
