"""Renders the panels of cometbox-dashboard.json with matplotlib, for
docs/operations.md: Grafana is not packaged in Debian, so this is an honest
stand-in, not a Grafana screenshot. It starts a gateway, puts a small load
on it (SSE and long-poll subscribers, a redis-py publisher), scrapes
/metrics once a second with prometheus-client's parser, and plots the same
expressions the dashboard uses (rates over the scrapes, histogram quantiles).

    .venv/bin/python backend-examples/grafana/render.py target/release/cometbox docs/dashboard.png
"""
import pathlib
import re
import subprocess
import sys
import tempfile
import threading
import time

import httpx
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import redis  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

SECONDS = 40


def start(binary, tmp):
    sock = tmp / "gw.sock"
    conf = tmp / "gateway.conf"
    conf.write_text(
        'server.port = 0\nserver.workers = 2\nmetrics.listen = "127.0.0.1:0"\n'
        f'mailbox.backend-socket = "{sock}"\nmailbox.poll-timeout = 5\n'
    )
    log = open(tmp / "gw.log", "w+")
    proc = subprocess.Popen([binary, "-c", str(conf)], stderr=log, env={"RUST_LOG": "info"})
    for _ in range(200):
        text = (tmp / "gw.log").read_text()
        http, metrics = re.search(r"listening for HTTP on (\S+)", text), re.search(r"metrics listener on (\S+):", text)
        if http and metrics:
            return proc, f"http://{http.group(1)}", f"http://{metrics.group(1)}", str(sock)
        time.sleep(0.05)
    raise SystemExit(text)


def subscribers(base, stop, n, transport):
    def run(i):
        cursor = None
        with httpx.Client(timeout=None) as c:
            while not stop.is_set():
                try:
                    if transport == "sse":
                        with c.stream("GET", f"{base}/mailbox/room:{i % 5}", headers={"Accept": "text/event-stream"}) as r:
                            for _ in r.iter_bytes():
                                if stop.is_set():
                                    return
                    else:
                        since = f"?since={cursor}" if cursor else ""
                        cursor = c.get(f"{base}/mailbox/user:{i}{since}").json()["cursor"]
                except httpx.HTTPError:
                    time.sleep(0.1)

    for i in range(n):
        threading.Thread(target=run, args=(i,), daemon=True).start()


def scrape(url):
    out = {}
    for family in text_string_to_metric_families(httpx.get(url + "/metrics").text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def total(sample, name, **labels):
    return sum(v for (n, ls), v in sample.items() if n == name and all(dict(ls).get(k) == w for k, w in labels.items()))


def by(sample, name, label):
    groups = {}
    for (n, ls), v in sample.items():
        if n == name:
            key = dict(ls).get(label, "")
            groups[key] = groups.get(key, 0) + v
    return groups


def quantile(q, buckets):
    """histogram_quantile over cumulative (le, count) pairs, as Prometheus."""
    buckets = sorted(buckets)
    count = buckets[-1][1]
    if count == 0:
        return 0.0
    rank, prev_le, prev_c = q * count, 0.0, 0.0
    for le, c in buckets:
        if c >= rank:
            if le == float("inf"):
                return prev_le
            return prev_le + (le - prev_le) * (rank - prev_c) / max(c - prev_c, 1e-9)
        prev_le, prev_c = le, c
    return prev_le


def main(binary, png):
    with tempfile.TemporaryDirectory() as d:
        proc, base, metrics, sock = start(binary, pathlib.Path(d))
        stop = threading.Event()
        subscribers(base, stop, 20, "sse")
        subscribers(base, stop, 10, "longpoll")
        r = redis.Redis(unix_socket_path=sock)

        def publish():
            i = 0
            while not stop.is_set():
                burst = 20 if (i // 100) % 2 else 5  # alternate quiet and busy
                for _ in range(burst):
                    r.publish(f"room:{i % 5}", f"message {i}")
                    r.publish(f"user:{i % 10}", f"note {i}")
                    i += 1
                time.sleep(0.1)

        threading.Thread(target=publish, daemon=True).start()
        samples = []
        for _ in range(SECONDS):
            samples.append((time.time(), scrape(metrics)))
            time.sleep(1)
        stop.set()
        proc.terminate()
        proc.wait()
    t0 = samples[0][0]
    xs = [t - t0 for t, _ in samples[1:]]

    def rate(f):
        return [(f(b) - f(a)) / (tb - ta) for (ta, a), (tb, b) in zip(samples, samples[1:])]

    fig, axes = plt.subplots(3, 2, figsize=(13, 10))
    fig.suptitle("cometbox dashboard panels, rendered by matplotlib from /metrics (not Grafana)", fontsize=12)
    ax = axes[0][0]
    transports = sorted(by(samples[-1][1], "cometbox_connections", "transport"))
    ax.stackplot(xs, *[[by(s, "cometbox_connections", "transport").get(t, 0) for _, s in samples[1:]] for t in transports], labels=transports)
    ax.set_title("Connections by transport")
    ax.legend(loc="upper left", fontsize=8)
    ax = axes[0][1]
    ax.plot(xs, rate(lambda s: total(s, "cometbox_messages_published_total")), label="published")
    ax.plot(xs, rate(lambda s: total(s, "cometbox_messages_delivered_total")), label="delivered")
    ax.set_title("Messages per second")
    ax.legend(fontsize=8)
    ax = axes[1][0]
    for q in (0.5, 0.99):
        ys = []
        for (_, a), (_, b) in zip(samples, samples[1:]):
            bucket = "cometbox_delivery_latency_seconds_bucket"
            les = {float(dict(ls)["le"]) for (n, ls) in b if n == bucket}
            ys.append(1000 * quantile(q, [(le, total(b, bucket, le=str(le) if le != float("inf") else "+Inf") - total(a, bucket, le=str(le) if le != float("inf") else "+Inf")) for le in les]))
        ax.plot(xs, ys, label=f"p{int(q * 100)}")
    ax.set_title("Publish to delivery latency (ms)")
    ax.legend(fontsize=8)
    ax = axes[1][1]
    ax.plot(xs, [v / 1024 for v in rate(lambda s: total(s, "cometbox_http_sent_bytes_total"))], label="out")
    ax.plot(xs, [v / 1024 for v in rate(lambda s: total(s, "cometbox_http_received_bytes_total"))], label="in")
    ax.set_title("KiB per second")
    ax.legend(fontsize=8)
    ax = axes[2][0]
    ax.plot(xs, [total(s, "cometbox_retained_messages") for _, s in samples[1:]], label="retained messages")
    ax.set_title("Retained messages")
    ax = axes[2][1]
    for name, label in [("cometbox_backend_commands_total", "backend commands/s"), ("cometbox_missed_total", "missed/s"),
                        ("cometbox_http_unavailable_total", "503s/s"), ("cometbox_auth_failures_total", "auth failures/s")]:
        ax.plot(xs, rate(lambda s, n=name: total(s, n)), label=label)
    ax.set_title("Backend commands and trouble")
    ax.legend(fontsize=8)
    for row in axes:
        for a in row:
            a.set_xlabel("seconds")
            a.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png, dpi=80)
    print(f"wrote {png}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
