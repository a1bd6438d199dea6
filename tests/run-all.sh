#!/usr/bin/env bash
# Installs what the tests need on a fresh Debian machine, then runs every test:
# Debian packages (apt-get, when root), Python packages into .venv, npm
# packages locally; then `cargo test` and the interop suites that drive the
# gateway with real third-party clients.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_packages=()
command -v redis-cli >/dev/null || apt_packages+=(redis-tools)
if ((${#apt_packages[@]})); then
    if [ "$(id -u)" = 0 ]; then
        echo "== installing Debian packages: ${apt_packages[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${apt_packages[@]}" >/dev/null
    else
        echo "MISSING Debian packages: ${apt_packages[*]} (run this script as root, or install them)" >&2
        exit 1
    fi
fi

if [ ! -x .venv/bin/python ]; then
    echo "== creating .venv"
    python3 -m venv .venv
fi
echo "== installing Python test packages"
.venv/bin/pip install -q --disable-pip-version-check -r tests/interop/requirements.txt

echo "== cargo test"
cargo build --release --quiet
cargo test --release -- --test-threads=4

echo "== interop tests (third-party clients)"
COMETBOX_BIN="$PWD/target/release/cometbox" .venv/bin/python -m pytest -q tests/interop
