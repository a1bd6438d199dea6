"""Starts the real cometbox binary for interop tests that use clients we did not write."""
import os
import pathlib
import re
import signal
import subprocess
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
BINARY = pathlib.Path(os.environ.get("COMETBOX_BIN", ROOT / "target" / "release" / "cometbox"))


class Gateway:
    def __init__(self, tmp_path, extra=""):
        self.dir = tmp_path
        self.socket = str(tmp_path / "gw.sock")
        self.config = tmp_path / "gateway.conf"
        self.config.write_text(
            'server.bind = "127.0.0.1"\nserver.port = 0\nserver.workers = 2\n'
            f'mailbox.backend-socket = "{self.socket}"\n{extra}\n'
        )
        self.log_path = tmp_path / "gateway.log"
        if not BINARY.exists():
            raise RuntimeError(f"{BINARY} is missing: run `cargo build --release` (tests/run-all.sh does)")
        self.proc = subprocess.Popen(
            [str(BINARY), "-c", str(self.config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=open(self.log_path, "wb"),
            env={**os.environ, "RUST_LOG": "info"},
        )
        deadline = time.time() + 20
        while True:
            text = self.log()
            m = re.search(r"listening for HTTP on (\S+)", text)
            if m:
                self.addr = m.group(1)
                break
            if self.proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"gateway did not start:\n{text}")
            time.sleep(0.02)
        self.base = f"http://{self.addr}"

    def log(self):
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def url(self, path):
        return self.base + path

    def ws_url(self, path):
        return f"ws://{self.addr}{path}"

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def start_gateway(tmp_path):
    started = []

    def start(extra=""):
        d = tmp_path / f"gw{len(started)}"
        d.mkdir()
        gw = Gateway(d, extra)
        started.append(gw)
        return gw

    yield start
    for gw in started:
        gw.stop()


@pytest.fixture
def gateway(start_gateway):
    return start_gateway()
