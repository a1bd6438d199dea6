#!/usr/bin/env bash
# The disk store beside the memory store, on this machine's disk:
#   - throughput: delivered msg/s to 1,000 SSE subscribers (as bench/run.sh);
#   - publish: acknowledged publishes/s and PUBLISH reply latency p50/p99,
#     no subscribers, 100 publishes in flight, 100-byte payloads;
#   - restart: time from exec to a listening port with 100,000 and
#     1,000,000 retained messages, after SIGTERM and after SIGKILL.
# for mailbox.store = "memory" and "disk" with store-fsync no / everysec /
# always. Writes bench-results/disk-RUN/results.jsonl.
#
#   bench/disk.sh            the sizes of docs/BENCHMARKS.md
#   bench/disk.sh --quick    a tenth of them
#   MODES="memory everysec" REPEAT=3 RESTARTS= bench/disk.sh
#       alternate the stores three times (this machine is shared: compare
#       within a run), no restart measurements; PORT=18181 for another HTTP port
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
target=${CARGO_TARGET_DIR:-$root/target}

quick=false
[ "${1:-}" = --quick ] && quick=true
if $quick; then
    TP_BOXES=100 TP_MSGS=20000 PUB_MSGS=20000 RESTARTS="10000 100000"
else
    TP_BOXES=1000 TP_MSGS=200000 PUB_MSGS=200000 RESTARTS=${RESTARTS-"100000 1000000"}
fi
MODES=${MODES:-memory no everysec always}
PORT=${PORT:-18080} # another on this machine may hold the default
REPEAT=${REPEAT:-1}
ulimit -n "$(ulimit -Hn)"

cargo build --release --quiet -p cometbox -p cometbox-bench
bench=$target/release/cometbox-bench
cometbox=$target/release/cometbox
# The store directory must be on a real disk for fsync to mean anything.
work=$(mktemp -d "$root/bench-results/.disk-work.XXXXXX" 2>/dev/null || mktemp -d /var/tmp/cometbox-disk.XXXXXX)
out=$root/bench-results/disk-$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$out"
pid=
cleanup() {
    [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# The HTTP port is bound before the store is replayed (connections wait
# in the backlog meanwhile), so "ready" is the log's listening line.
wait_listening() {
    for _ in $(seq 12000); do
        grep -q "listening for HTTP" "$1" && return 0
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.01
    done
    echo "cometbox did not start; see $1" >&2
    cat "$1" >&2
    return 1
}
starts=0

# start MODE [extra config lines]: MODE is memory, no, everysec or always.
start() {
    local mode=$1 extra=${2:-}
    local store="mailbox.store = \"disk\"
mailbox.store-dir = \"$work/store-$mode\"
mailbox.store-fsync = \"$mode\""
    [ "$mode" = memory ] && store='mailbox.store = "memory"'
    cat >"$work/cometbox.conf" <<CONF
server.bind = "127.0.0.1"
server.port = $PORT
server.workers = 2
server.max-connections = 15000
mailbox.backend-socket = "$work/cometbox.sock"
mailbox.max-messages = 100
mailbox.max-mailboxes = 1000000
mailbox.max-memory = 2147483648
$store
$extra
CONF
    starts=$((starts + 1))
    log=$work/cometbox-$mode-$starts.log
    RUST_LOG=info "$cometbox" -c "$work/cometbox.conf" 2>"$log" &
    pid=$!
    wait_listening "$log"
}

stop() { # SIGTERM or SIGKILL
    kill -"${1:-TERM}" "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    pid=
}

run() { # mode scenario args...
    local mode=$1 scenario=$2
    shift 2
    echo "== $mode $scenario $*" >&2
    timeout 300 "$bench" "$scenario" --target cometbox --http 127.0.0.1:$PORT \
        --publish "$work/cometbox.sock" --pid "$pid" "$@" |
        sed "s/^{/{\"store\":\"$mode\",/" >>"$out/results.jsonl"
    tail -n 1 "$out/results.jsonl" >&2
}

for round in $(seq "$REPEAT"); do for mode in $MODES; do
    rm -rf "$work/store-$mode"
    start "$mode"
    run "$mode" throughput --n "$TP_BOXES" --messages "$TP_MSGS"
    stop
    rm -rf "$work/store-$mode"
    start "$mode"
    run "$mode" publish --n "$TP_BOXES" --messages "$PUB_MSGS" --batch 100 --size 100
    stop
done; done

# Restart: fill N messages over N/100 mailboxes (all retained), stop, start.
for n in $RESTARTS; do
    for how in TERM KILL; do
        rm -rf "$work/store-everysec"
        start everysec
        run everysec publish --n $((n / 100)) --messages "$n" --batch 1000 --size 100 --connections 2 >/dev/null
        sleep 1.5 # past everysec's fsync, so SIGKILL loses nothing measurable
        stop "$how"
        bytes=$(du -sb "$work/store-everysec" | cut -f1)
        t0=$(date +%s%N)
        start everysec
        t1=$(date +%s%N)
        replay=$(grep -o '[0-9]* records replayed, [0-9]* mailboxes, [0-9]* bytes retained, in [0-9]* ms' "$log")
        rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
        echo "{\"store\":\"everysec\",\"scenario\":\"restart\",\"after\":\"SIG$how\",\"retained\":$n,\"dir_bytes\":$bytes,\"start_to_listening_ms\":$(((t1 - t0) / 1000000)),\"rss_kb\":$rss,\"replay\":\"$replay\"}" |
            tee -a "$out/results.jsonl" >&2
        stop
    done
done
grep -h 'compacted the log' "$work"/cometbox-*.log | tail -n 5 >"$out/compactions.txt" || true
echo "results: $out" >&2
