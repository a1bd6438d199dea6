#!/usr/bin/env bash
# Starts the chat demo's own gateway and the chat app together; Ctrl-C stops
# both. Its ports (gateway 8081, app 8082) and socket are its own, so it runs
# beside the gateway from the README's first command (8080).
#
# CHAT_PORT, CHAT_GATEWAY_PORT and CHAT_SOCKET choose others; COMETBOX_BIN
# names a gateway binary to use instead of building one.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
app_port=${CHAT_PORT:-8082} gateway_port=${CHAT_GATEWAY_PORT:-8081}
socket=${CHAT_SOCKET:-/tmp/cometbox-chat.sock}

fail() { echo "chat demo: $*" >&2; exit 1; }
in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for port in "$gateway_port" "$app_port"; do
    in_use "$port" && fail "127.0.0.1:$port is already in use (another chat demo?); stop it or set CHAT_GATEWAY_PORT / CHAT_PORT"
done

if [ -z "${COMETBOX_BIN:-}" ]; then
    cargo build --release --quiet --manifest-path "$root/Cargo.toml" || fail "cargo build failed (see above)"
    COMETBOX_BIN=${CARGO_TARGET_DIR:-$root/target}/release/cometbox
fi
if ! python3 -c 'import redis' 2>/dev/null; then
    [ -x "$root/.venv/bin/python" ] || python3 -m venv "$root/.venv"
    "$root/.venv/bin/python" -c 'import redis' 2>/dev/null || "$root/.venv/bin/pip" install -q redis
fi
python=$(python3 -c 'import redis' 2>/dev/null && echo python3 || echo "$root/.venv/bin/python")

work=$(mktemp -d)
config=$here/gateway.conf
if [ "$app_port$gateway_port$socket" != "80828081/tmp/cometbox-chat.sock" ]; then
    config=$work/gateway.conf
    cat >"$config" <<CONF
include "$here/gateway.conf"
server.port := $gateway_port
mailbox.backend-socket := "$socket"
mailbox.cors-origins := ( "http://127.0.0.1:$app_port", "http://localhost:$app_port" )
CONF
fi

gateway='' app='' tailer=''
# shellcheck disable=SC2317 # run by the EXIT trap
stop() {
    trap - EXIT INT TERM
    # shellcheck disable=SC2086 # the unset ones are empty
    kill $gateway $app $tailer 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap stop EXIT
trap 'exit 0' INT TERM

RUST_LOG=${RUST_LOG:-info} "$COMETBOX_BIN" -c "$config" 2>"$work/gateway.log" &
gateway=$!
# The app publishes over the socket: wait until the gateway made it.
for _ in $(seq 200); do
    grep -q "listening for HTTP" "$work/gateway.log" && [ -S "$socket" ] && break
    kill -0 "$gateway" 2>/dev/null ||
        fail "the gateway did not start: $(grep -v '^\s*$' "$work/gateway.log" | tail -n 1)"
    sleep 0.05
done
[ -S "$socket" ] || fail "the gateway did not create $socket within 10 s"
tail -n +1 -f --pid="$gateway" "$work/gateway.log" >&2 &
tailer=$!

"$python" "$here/app.py" --port "$app_port" --gateway "http://127.0.0.1:$gateway_port" --socket "$socket" &
app=$!
echo "chat demo: open http://127.0.0.1:$app_port/ (Ctrl-C stops gateway and app)"
status=0
wait -n "$gateway" "$app" || status=$?
kill -0 "$gateway" 2>/dev/null || fail "the gateway stopped (exit $status)"
fail "the app stopped (exit $status)"
