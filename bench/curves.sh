#!/usr/bin/env bash
# Cost curves: idle memory per subscriber (SSE, a mailbox each), fan-out CPU
# per delivery and fan-out completion (SSE, one mailbox, 20 messages) at
# N = 1,000 … 15,000 subscribers, for cometbox, nchan and the floor, all in
# one run on loopback. Writes bench-results/curves-RUN/curves.jsonl (one JSON
# line per measurement, with "n") and draws docs/bench/curves-*.png from it
# with bench/plot.py (matplotlib, installed into .venv when missing).
#
#   bench/curves.sh                     every size, every server, 3 times (~10 minutes)
#   CURVE_SIZES="1000 5000" CURVE_REPEAT=1 bench/curves.sh
#   BENCH_TARGETS="cometbox floor" bench/curves.sh
#   bench/curves.sh --plot-only FILE    redraw the PNGs from a curves.jsonl
#
# Run it on its own: it uses the ports of bench/run.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

plot() {
    if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import matplotlib' 2>/dev/null; then
        [ -x .venv/bin/python ] || python3 -m venv .venv
        .venv/bin/pip install -q --disable-pip-version-check -r bench/requirements.txt
    fi
    .venv/bin/python bench/plot.py "$1" docs/bench
}
if [ "${1:-}" = --plot-only ]; then
    plot "$2"
    exit 0
fi

sizes=${CURVE_SIZES:-1000 2000 5000 10000 15000}
repeat=${CURVE_REPEAT:-3}
targets=${BENCH_TARGETS:-cometbox nchan floor}
# 15,000 subscribers and a publisher in the load generator, 15,000 in each
# server: under the 20,000 open files a process may have here.
ulimit -n "$(ulimit -Hn)"
[ -f /usr/lib/nginx/modules/ngx_nchan_module.so ] || {
    echo "nchan is missing: run bench/run.sh once (it installs the peers)" >&2
    exit 1
}

target_dir=${CARGO_TARGET_DIR:-$root/target}
cargo build --release --quiet -p cometbox -p cometbox-bench
bench=$target_dir/release/cometbox-bench
work=$(mktemp -d /tmp/cometbox-curves.XXXXXX)
out=$root/bench-results/curves-$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$out"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
# shellcheck source=bench/servers.sh
source bench/servers.sh

measure() { # target scenario n
    local target=$1 scenario=$2 n=$3 line
    "start_$target"
    echo "== $target $scenario n=$n" >&2
    if line=$(timeout 300 "$bench" "$scenario" --target "$target" --http "$http" --publish "$publish" \
        --pid "$pid" --n "$n" --messages 20); then
        echo "{\"n\":$n,${line#\{}" >>"$out/curves.jsonl"
    else
        echo "{\"n\":$n,\"scenario\":\"$scenario\",\"target\":\"$target\",\"error\":\"the run failed or timed out\"}" >>"$out/curves.jsonl"
    fi
    tail -n 1 "$out/curves.jsonl" >&2
    stop
}

started=$(date +%s)
echo "load before: $(cat /proc/loadavg)" >"$out/load.txt"
for ((r = 1; r <= repeat; r++)); do
    for n in $sizes; do
        for target in $targets; do
            measure "$target" idle-sse "$n"
            measure "$target" fanout "$n"
        done
    done
done
echo "load after: $(cat /proc/loadavg)" >>"$out/load.txt"
echo "$(($(date +%s) - started)) s" >>"$out/load.txt"
plot "$out/curves.jsonl"
cat "$out/load.txt" >&2
echo "results: $out" >&2
