#!/usr/bin/env bash
# Cluster mode beside single-node mode: fan-out to SSE subscribers split over
# two gateways sharing one Redis, publish throughput through Redis, and the
# delivery latency at a fixed rate; the same scenarios against one gateway
# in memory. Writes bench-results/cluster-RUN/results.jsonl and results.md.
#
#   bench/cluster.sh            the sizes of docs/BENCHMARKS.md
#   bench/cluster.sh --quick    a tenth of them
#
# Needs redis-server (Debian's package; installed when missing, as root).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

quick=false
[ "${1:-}" = --quick ] && quick=true
if $quick; then
    FANOUT=1000 MSGS=10 TP_BOXES=100 TP_MSGS=20000 PACED_MSGS=20000 RATE=5000
else
    FANOUT=10000 MSGS=20 TP_BOXES=1000 TP_MSGS=200000 PACED_MSGS=100000 RATE=10000
fi
ulimit -n "$(ulimit -Hn)"

if ! command -v redis-server >/dev/null; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server >/dev/null
    else
        echo "missing Debian package: redis-server (run as root to install it)" >&2
        exit 1
    fi
fi

target_dir=${CARGO_TARGET_DIR:-$root/target}
cargo build --release --quiet -p cometbox -p cometbox-bench
bench=$target_dir/release/cometbox-bench
work=$(mktemp -d /tmp/cometbox-cluster-bench.XXXXXX)
out=$root/bench-results/cluster-$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$out"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

wait_port() {
    for _ in $(seq 200); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "nothing listens on port $1" >&2
    return 1
}

gateway() { # name port [extra config]
    cat >"$work/$1.conf" <<CONF
server.bind = "127.0.0.1"
server.port = $2
server.workers = 2
server.max-connections = 15000
mailbox.backend-socket = "$work/$1.sock"
mailbox.max-messages = 100
${3:-}
CONF
    RUST_LOG=warn "$target_dir/release/cometbox" -c "$work/$1.conf" 2>"$work/$1.log" &
    pids+=($!)
    wait_port "$2"
}

redis_out_bytes() {
    redis-cli -p 18379 INFO stats | tr -d '\r' | sed -n 's/^total_net_output_bytes://p'
}

run() { # label scenario args...
    local label=$1 scenario=$2
    shift 2
    echo "== $label $scenario $*" >&2
    local before after
    before=$( [ "$label" = cluster ] && redis_out_bytes || echo 0)
    if ! timeout 300 "$bench" "$scenario" --target cometbox "$@" >>"$out/results.jsonl"; then
        echo "{\"scenario\":\"$scenario\",\"target\":\"$label\",\"error\":\"the run failed or timed out\"}" >>"$out/results.jsonl"
    fi
    if [ "$label" = cluster ]; then
        after=$(redis_out_bytes)
        echo "   redis sent $((after - before)) bytes during $scenario" | tee -a "$out/redis-traffic.txt" >&2
    fi
    tail -n 1 "$out/results.jsonl" >&2
}

stop_all() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    pids=()
    sleep 1
}

scenario_args() { # scenario
    case $1 in
    fanout) echo --n "$FANOUT" --messages "$MSGS" ;;
    throughput) echo --n "$TP_BOXES" --messages "$TP_MSGS" ;;
    # Latency at a rate both modes sustain: 100 publishes in flight at most.
    throughput-paced) echo --n "$TP_BOXES" --messages "$PACED_MSGS" --batch 100 --rate "$RATE" ;;
    esac
}

# Fresh servers (and an empty Redis) for each scenario, so one's retained
# mail never reaches the next one's subscribers.
for scenario in fanout throughput throughput-paced; do
    # shellcheck disable=SC2046 # the arguments are words
    set -- $(scenario_args "$scenario")

    # One gateway, in memory.
    gateway single 18083
    run single "$scenario" --http 127.0.0.1:18083 --publish "$work/single.sock" --pid "${pids[0]}" "$@"
    stop_all

    # Two gateways, one Redis; publishes go to the first, subscribers alternate.
    redis-server --port 18379 --bind 127.0.0.1 --save "" --appendonly no --dir "$work" >"$work/redis.log" 2>&1 &
    pids+=($!)
    wait_port 18379
    cluster='cluster.redis = "redis://127.0.0.1:18379"'
    gateway a 18083 "$cluster"
    gateway b 18084 "$cluster"
    run cluster "$scenario" --http 127.0.0.1:18083 --http2 127.0.0.1:18084 --publish "$work/a.sock" \
        --pid "${pids[1]}" --pid2 "${pids[2]}" "$@"
    stop_all
    cat "$work/a.log" "$work/b.log" >>"$out/gateways.log"
done

{
    echo "Run $(basename "$out") on $(nproc) cores, $(uname -sr); quick=$quick; load before: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo
    "$bench" report-cluster "$out/results.jsonl"
    echo
    cat "$out/redis-traffic.txt"
} | tee "$out/results.md"
echo "results: $out" >&2
