"""backend-examples/chat/run.sh, the chat demo's one command: it runs beside
the README's gateway, and a port already taken stops it with one line."""
import os
import pathlib
import signal
import socket
import subprocess
import time

import httpx

from conftest import BINARY

RUN = pathlib.Path(__file__).resolve().parents[2] / "backend-examples" / "chat" / "run.sh"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env_for(tmp_path, gateway_port, app_port):
    return {
        **os.environ,
        "COMETBOX_BIN": str(BINARY),
        "CHAT_GATEWAY_PORT": str(gateway_port),
        "CHAT_PORT": str(app_port),
        "CHAT_SOCKET": str(tmp_path / "chat.sock"),
        "CHAT_QUIET": "1",
    }


def test_run_sh_fails_with_one_clear_line_when_its_port_is_taken(tmp_path):
    # What a newcomer hit: a gateway (or anything) already on the demo's port.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run(
            ["bash", RUN], env=env_for(tmp_path, port, free_port()), capture_output=True, text=True, timeout=60
        )
    assert proc.returncode == 1
    assert proc.stdout == ""  # no "open http://…" for a demo that is not running
    assert proc.stderr.splitlines() == [
        f"chat demo: 127.0.0.1:{port} is already in use (another chat demo?); "
        "stop it or set CHAT_GATEWAY_PORT / CHAT_PORT"
    ]


def test_run_sh_starts_gateway_and_app_and_stops_both(tmp_path):
    gateway_port, app_port = free_port(), free_port()
    proc = subprocess.Popen(
        ["bash", RUN], env=env_for(tmp_path, gateway_port, app_port),
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        line = proc.stdout.readline()
        assert line == f"chat demo: open http://127.0.0.1:{app_port}/ (Ctrl-C stops gateway and app)\n"
        app = f"http://127.0.0.1:{app_port}"
        deadline = time.time() + 20
        while True:
            try:
                assert httpx.get(app + "/", timeout=5).status_code == 200
                break
            except httpx.ConnectError:
                assert time.time() < deadline, "the app never answered"
                time.sleep(0.05)
        said = httpx.post(app + "/say", json={"room": "lobby", "name": "t", "text": "hi"}, timeout=5)
        assert said.status_code == 200, said.text
        # The page's origin is allowed by the demo's gateway (CORS).
        body = httpx.get(
            f"http://127.0.0.1:{gateway_port}/mailbox/room:lobby", headers={"Origin": app}, timeout=5
        )
        assert body.headers["access-control-allow-origin"] == app
        assert '"text": "hi"' in body.json()["messages"][0]["data"]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    for port in (gateway_port, app_port):
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0, f"{port} still open after run.sh stopped"
    assert not (tmp_path / "chat.sock").exists()
