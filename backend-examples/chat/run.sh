#!/usr/bin/env bash
# Starts the gateway and the chat app together; Ctrl-C stops both.
# Then open http://127.0.0.1:8000/ in two browser windows.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)

cargo build --release --quiet --manifest-path "$root/Cargo.toml"
if ! python3 -c 'import redis' 2>/dev/null; then
    [ -x "$root/.venv/bin/python" ] || python3 -m venv "$root/.venv"
    "$root/.venv/bin/pip" install -q redis
fi
python=$(python3 -c 'import redis' 2>/dev/null && echo python3 || echo "$root/.venv/bin/python")

RUST_LOG=${RUST_LOG:-info} "$root/target/release/cometbox" -c "$here/gateway.conf" &
gateway=$! app=
trap 'kill $gateway $app 2>/dev/null; wait' EXIT INT TERM
# The app publishes over the socket: wait until the gateway made it.
for _ in $(seq 100); do [ -S /tmp/cometbox-chat.sock ] && break; sleep 0.05; done

"$python" "$here/app.py" --port 8000 --gateway http://127.0.0.1:8080 --socket /tmp/cometbox-chat.sock &
app=$!
echo "chat demo: open http://127.0.0.1:8000/ (Ctrl-C stops gateway and app)"
wait -n $gateway $app
