"""Draws bench/curves.sh's JSON lines as PNGs: one line per server, log-x.

    .venv/bin/python bench/plot.py CURVES.jsonl OUT_DIR

Writes curves-memory.png (idle memory per subscriber), curves-cpu.png
(fan-out server CPU per delivery) and curves-completion.png (fan-out
completion p50 and p99, in ms and per subscriber). Each point is the median
of the repetitions; the band is their min-max.
"""

import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import NullFormatter, ScalarFormatter  # noqa: E402

STYLE = {
    "cometbox": dict(color="tab:blue", marker="o"),
    "nchan": dict(color="tab:orange", marker="s"),
    "floor": dict(color="tab:gray", marker="^", linestyle="--"),
    "pushpin": dict(color="tab:green", marker="D"),
}


def series(rows, scenario, field, scale=1.0, per_n=False):
    """{target: [(n, median, lo, hi)]} of field over repetitions."""
    got = defaultdict(lambda: defaultdict(list))
    for r in rows:
        v = r.get(field)
        if r.get("scenario") != scenario or not isinstance(v, (int, float)) or v != v:
            continue
        v = v * scale / (r["n"] if per_n else 1)
        got[r["target"]][r["n"]].append(v)
    return {
        t: [(n, statistics.median(vs), min(vs), max(vs)) for n, vs in sorted(by_n.items())]
        for t, by_n in got.items()
    }


def draw(ax, data, label_suffix="", **extra):
    for target in sorted(data, key=lambda t: list(STYLE).index(t) if t in STYLE else 9):
        pts = data[target]
        ns = [p[0] for p in pts]
        style = dict(STYLE.get(target, {}))
        style.update(extra)
        ax.plot(ns, [p[1] for p in pts], label=target + label_suffix, **style)
        ax.fill_between(ns, [p[2] for p in pts], [p[3] for p in pts],
                        color=style.get("color"), alpha=0.15, linewidth=0)
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("subscribers (N)")
    ax.grid(True, which="both", alpha=0.3)


def main():
    rows = [json.loads(line) for line in Path(sys.argv[1]).read_text().splitlines() if line.strip()]
    rows = [r for r in rows if "error" not in r and "n" in r]
    out = Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    run = Path(sys.argv[1]).parent.name
    sizes = sorted({r["n"] for r in rows})

    fig, ax = plt.subplots(figsize=(7, 4.5))
    draw(ax, series(rows, "idle-sse", "bytes_per_subscriber"))
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.set_ylabel("server memory per idle SSE subscriber (bytes, log)")
    ax.set_title(f"Idle memory per subscriber, a mailbox each ({run})")
    ax.set_xticks(sizes, [f"{n:,}" for n in sizes])
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "curves-memory.png", dpi=110)

    fig, ax = plt.subplots(figsize=(7, 4.5))
    draw(ax, series(rows, "fanout", "server_cpu_per_delivery_us"))
    ax.set_ylim(bottom=0)
    ax.set_ylabel("server CPU per delivery (µs)")
    ax.set_title(f"Fan-out to N SSE subscribers of one mailbox: CPU ({run})")
    ax.set_xticks(sizes, [f"{n:,}" for n in sizes])
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "curves-cpu.png", dpi=110)

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    draw(left, series(rows, "fanout", "completion_p50_ms"), " p50")
    draw(left, series(rows, "fanout", "completion_p99_ms"), " p99", linestyle=":", alpha=0.8)
    left.set_yscale("log")
    left.yaxis.set_major_formatter(ScalarFormatter())
    left.yaxis.set_minor_formatter(NullFormatter())
    left.set_ylabel("completion: publish to last subscriber (ms, log)")
    left.set_title("Fan-out completion")
    draw(right, series(rows, "fanout", "completion_p50_ms", scale=1000.0, per_n=True), " p50")
    right.set_ylim(bottom=0)
    right.set_ylabel("completion p50 per subscriber (µs)")
    right.set_title("…divided by N (flat = linear cost)")
    for ax in (left, right):
        ax.set_xticks(sizes, [f"{n:,}" for n in sizes])
        ax.legend(fontsize=8)
    fig.suptitle(f"Fan-out to N SSE subscribers of one mailbox, 20 messages ({run})")
    fig.tight_layout()
    fig.savefig(out / "curves-completion.png", dpi=110)


if __name__ == "__main__":
    main()
