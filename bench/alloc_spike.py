#!/usr/bin/env python3
"""RSS of the gateway before, during and after a memory spike (issue 12 point 17).

Starts a cometbox binary with a temporary config, then twice:
  publish MESSAGES x SIZE bytes round-robin over MAILBOXES mailboxes (pipelined
  RESP over the backend socket), read every mailbox once by long-poll and once
  by SSE with CONCURRENCY clients at a time (so each transport's cached
  encoding is built and output queues grow), DEL every mailbox, close every
  client, wait, and read VmRSS from /proc/PID/status.
Prints one JSON line per run (RSS in MiB). Memory only: no timings are kept,
because the machine is shared.

  bench/alloc_spike.py --binary B --label L [--env K=V ...] [--runs N] [--out F]
  bench/alloc_spike.py --summary F        # medians per label, a markdown table

Python 3 standard library only.
"""

import argparse
import asyncio
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

MIB = 1024 * 1024


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def mib(kib):
    return round(kib / 1024, 1)


class Sampler(threading.Thread):
    """Polls VmRSS every 20 ms; peak() returns and resets the running maximum."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid = pid
        self.max = 0
        self.lock = threading.Lock()
        self.stop = False

    def run(self):
        while not self.stop:
            try:
                v = rss_kib(self.pid)
            except (OSError, RuntimeError):
                return
            with self.lock:
                self.max = max(self.max, v)
            time.sleep(0.02)

    def peak(self):
        with self.lock:
            v, self.max = self.max, 0
        return v


# ---------------------------------------------------------------- backend

def resp(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        if isinstance(a, str):
            a = a.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


class Backend:
    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.connect(path)
        self.buf = b""

    def replies(self, n):
        """Reads n single-line replies (integers or errors); returns them."""
        lines = []
        while len(lines) < n:
            while b"\r\n" not in self.buf:
                chunk = self.s.recv(1 << 16)
                if not chunk:
                    raise RuntimeError("backend socket closed")
                self.buf += chunk
            parts = self.buf.split(b"\r\n")
            self.buf = parts.pop()
            lines.extend(parts)
        return lines

    def pipeline(self, commands, batch=500):
        """Sends commands in batches, reading each batch's replies."""
        out = []
        for i in range(0, len(commands), batch):
            chunk = commands[i:i + batch]
            self.s.sendall(b"".join(chunk))
            out.extend(self.replies(len(chunk)))
        return out

    def info(self):
        self.s.sendall(resp("INFO", "everything"))
        while b"\r\n" not in self.buf:
            self.buf += self.s.recv(1 << 16)
        head, rest = self.buf.split(b"\r\n", 1)
        n = int(head[1:])
        while len(rest) < n + 2:
            rest += self.s.recv(1 << 16)
        self.buf = rest[n + 2:]
        return rest[:n].decode()


def publish(backend, mailboxes, messages, size, spike):
    cmds = []
    filler = (b"abcdefghijklmnopqrstuvwxyz0123456789" * (size // 36 + 1))
    for k in range(messages):
        head = b"s%d:m%d:" % (spike, k)
        payload = head + filler[: size - len(head)]
        cmds.append(resp("PUBLISH", f"mb{k % mailboxes}", payload))
    replies = backend.pipeline(cmds)
    errors = [r for r in replies if r.startswith(b"-")]
    return len(replies) - len(errors), errors[:3]


def delete_all(backend, mailboxes):
    replies = backend.pipeline([resp("DEL", f"mb{i}") for i in range(mailboxes)])
    return sum(int(r[1:]) for r in replies if r.startswith(b":"))


# ---------------------------------------------------------------- browsers

async def long_poll(port, name, hold):
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(f"GET /mailbox/{name} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    await w.drain()
    await asyncio.sleep(hold)  # let the gateway queue the answer
    data = await r.read()
    w.close()
    head, _, body = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"long-poll {name}: {head[:80]!r}")
    return len(json.loads(body)["messages"])


ID_LINE = re.compile(rb"(?:^|\n)id: ")


async def sse(port, name, want, hold):
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(f"GET /mailbox/{name}?transport=sse HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await w.drain()
    await asyncio.sleep(hold)
    buf = b""
    n = 0
    while n < want:
        chunk = await asyncio.wait_for(r.read(1 << 16), 60)
        if not chunk:
            break
        buf += chunk
        n = len(ID_LINE.findall(buf))
    w.close()
    return n


async def read_all(port, mailboxes, per_box, concurrency, hold):
    sem = asyncio.Semaphore(concurrency)

    resets = {"longpoll": 0, "sse": 0}

    async def one(kind, make):
        async with sem:
            for attempt in range(3):
                try:
                    return await make()
                except (ConnectionResetError, asyncio.IncompleteReadError):
                    # Seen now and then on this shared machine; retried and counted.
                    resets[kind] += 1
            return await make()

    tasks = []
    for i in range(mailboxes):
        name = f"mb{i}"
        tasks.append(one("longpoll", lambda name=name: long_poll(port, name, hold)))
        tasks.append(one("sse", lambda name=name: sse(port, name, per_box, hold)))
    got = await asyncio.gather(*tasks)
    return sum(got[0::2]), sum(got[1::2]), resets


# ---------------------------------------------------------------- one run

CONFIG = """\
server.bind = "127.0.0.1"
server.port = 0
server.max-connections = 10000
mailbox.backend-socket = "{sock}"
mailbox.max-memory = {max_memory}
mailbox.max-messages = 1000
mailbox.max-mailbox-bytes = 16777216
mailbox.message-ttl = 3600
"""


def run_once(a, run_no):
    tmp = tempfile.mkdtemp(prefix="alloc-spike-")
    sock = os.path.join(tmp, "backend.sock")
    conf = os.path.join(tmp, "gateway.conf")
    with open(conf, "w") as f:
        f.write(CONFIG.format(sock=sock, max_memory=a.max_memory))
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMETBOX_")}
    env["RUST_LOG"] = "info"
    for kv in a.env:
        k, v = kv.split("=", 1)
        env[k] = v
    log = open(os.path.join(tmp, "gateway.log"), "w+")
    proc = subprocess.Popen([a.binary, "-c", conf], env=env, stdout=log, stderr=log)
    try:
        port = None
        for _ in range(200):
            time.sleep(0.05)
            log.seek(0)
            m = re.search(r"listening for HTTP on [^ ]*:(\d+)", log.read())
            if m and os.path.exists(sock):
                port = int(m.group(1))
                break
            if proc.poll() is not None:
                break
        if port is None:
            log.seek(0)
            raise RuntimeError("gateway did not start: " + log.read()[-2000:])
        backend = Backend(sock)
        time.sleep(1.0)
        result = {"label": a.label, "run": run_no, "env": a.env,
                  "binary": os.path.basename(a.binary),
                  "idle": mib(rss_kib(proc.pid))}
        sampler = Sampler(proc.pid)
        sampler.start()
        for spike in (1, 2):
            sampler.peak()
            ok, errors = publish(backend, a.mailboxes, a.messages, a.size, spike)
            after_publish = rss_kib(proc.pid)
            lp, ss, resets = asyncio.run(read_all(port, a.mailboxes, a.messages // a.mailboxes,
                                          a.concurrency, a.hold))
            peak = max(sampler.peak(), rss_kib(proc.pid))
            deleted = delete_all(backend, a.mailboxes)
            time.sleep(a.wait)
            after = rss_kib(proc.pid)
            time.sleep(a.wait_long - a.wait)
            after_long = rss_kib(proc.pid)
            result.update({
                f"published{spike}": ok, f"publish_errors{spike}": [e.decode() for e in errors],
                f"longpoll_msgs{spike}": lp, f"sse_msgs{spike}": ss, f"resets{spike}": resets, f"deleted{spike}": deleted,
                f"after_publish{spike}": mib(after_publish), f"peak{spike}": mib(peak),
                f"after{spike}_{a.wait:g}s": mib(after),
                f"after{spike}_{a.wait_long:g}s": mib(after_long),
            })
        info = backend.info()
        result["info_memory"] = {k: v for k, v in
                                 (l.split(":", 1) for l in info.splitlines() if ":" in l)
                                 if "mem" in k or k in ("mailboxes", "connected_clients")}
        sampler.stop = True
        return result
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


# ---------------------------------------------------------------- summary

COLUMNS = [("idle", "idle"), ("peak1", "peak, 1st spike"), ("after1_5s", "5 s after 1st"),
           ("after1_20s", "20 s after 1st"), ("peak2", "peak, 2nd spike"),
           ("after2_5s", "5 s after 2nd"), ("after2_20s", "20 s after 2nd")]


def summary(path):
    rows = {}
    for line in open(path):
        if line.strip():
            r = json.loads(line)
            rows.setdefault(r["label"], []).append(r)
    print("| variant | runs | " + " | ".join(c[1] for c in COLUMNS) + " |")
    print("|---|---|" + "---|" * len(COLUMNS))
    for label, rs in rows.items():
        cells = []
        for key, _ in COLUMNS:
            vals = [r[key] for r in rs if key in r]
            med = statistics.median(vals)
            cells.append(f"{med:.0f} ({min(vals):.0f}–{max(vals):.0f})")
        print(f"| {label} | {len(rs)} | " + " | ".join(cells) + " |")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--binary")
    p.add_argument("--label")
    p.add_argument("--env", action="append", default=[], help="KEY=VALUE for the gateway")
    p.add_argument("--runs", type=int, default=1)
    p.add_argument("--out", help="append the JSON lines here too")
    p.add_argument("--mailboxes", type=int, default=1000)
    p.add_argument("--messages", type=int, default=100_000)
    p.add_argument("--size", type=int, default=2048)
    p.add_argument("--concurrency", type=int, default=300)
    p.add_argument("--hold", type=float, default=0.2,
                   help="seconds each client waits before reading, so output queues grow")
    p.add_argument("--max-memory", type=int, default=1 << 30)
    p.add_argument("--wait", type=float, default=5.0)
    p.add_argument("--wait-long", type=float, default=20.0)
    p.add_argument("--summary", metavar="JSONL")
    a = p.parse_args()
    if a.summary:
        summary(a.summary)
        return
    if not a.binary or not a.label:
        p.error("--binary and --label are needed")
    for n in range(1, a.runs + 1):
        r = run_once(a, n)
        line = json.dumps(r)
        print(line, flush=True)
        if a.out:
            with open(a.out, "a") as f:
                f.write(line + "\n")


if __name__ == "__main__":
    sys.exit(main())
