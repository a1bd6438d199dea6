#!/usr/bin/env bash
# Installs what the tests need on a fresh Debian machine, then runs every test:
# Debian packages (apt-get, when root), Python packages into .venv, npm
# packages locally (tests/node); then `cargo test`, the interop suites that
# drive the gateway with real third-party clients (and nginx), the browser and
# client tests, and, when root, the Debian package's install-run-purge test
# (which installs cargo-deb with cargo if it is missing).
set -euo pipefail
cd "$(dirname "$0")/.."

# Each entry is "command-or-file-that-proves-it-is-there:debian-package".
# The runtimes of the backend examples (Ruby, PHP and their Redis/JWT
# libraries), redis-cli and socat for the shell example, nginx-light for the
# nginx snippet's test, systemd-analyze and curl for the Debian package's
# test, and Debian's Chromium for the browser tests (playwright-core drives
# the system browser). redis-server for the cluster tests (tests/cluster.rs),
# which start their own on a temporary port.
needs=(
    redis-cli:redis-tools
    redis-server:redis-server
    socat:socat
    nginx:nginx-light
    systemd-analyze:systemd
    curl:curl
    ruby:ruby
    /usr/share/rubygems-integration/all/gems/redis-*/lib/redis.rb:ruby-redis
    /usr/share/rubygems-integration/all/gems/jwt-*/lib/jwt.rb:ruby-jwt
    php:php-cli
    /etc/php/*/mods-available/redis.ini:php-redis
    /usr/share/php/Predis/Autoloader.php:php-predis
    chromium:chromium
    chromedriver:chromium-driver
    /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf:fonts-dejavu-core
)
apt_packages=()
for need in "${needs[@]}"; do
    probe=${need%%:*} package=${need##*:}
    if [[ $probe == /* ]]; then
        # shellcheck disable=SC2086 # the probe may be a glob
        compgen -G "$probe" >/dev/null || apt_packages+=("$package")
    else
        command -v "$probe" >/dev/null || apt_packages+=("$package")
    fi
done
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
# matplotlib, for bench/plot.py (the cost curves of bench/curves.sh).
.venv/bin/pip install -q --disable-pip-version-check -r bench/requirements.txt
# Older redis-py majors, each in its own folder, for the version matrix in
# tests/interop/test_redis_py_versions.py (8 is the .venv's own).
for version in 5.3.1 6.4.0 7.4.1; do
    [ -f ".venv/redis-py/$version/redis/__init__.py" ] ||
        .venv/bin/pip install -q --disable-pip-version-check --target ".venv/redis-py/$version" "redis==$version"
done

echo "== installing npm test packages (tests/node)"
npm ci --prefix tests/node --no-audit --no-fund --loglevel=error

echo "== cargo test"
cargo build --release --quiet
cargo test --release -- --test-threads=4

export COMETBOX_BIN="${CARGO_TARGET_DIR:-$PWD/target}/release/cometbox"
echo "== interop tests (third-party clients)"
.venv/bin/python -m pytest -q tests/interop

echo "== Bayeux with the npm clients (faye, cometd + cometd-nodejs-client)"
node --test --test-concurrency=1 --test-force-exit tests/node/*.test.mjs

if compgen -G "tests/e2e/*.test.mjs" >/dev/null; then
    echo "== browser and client tests (headless Chromium, terser, tsc)"
    node --test --test-concurrency=1 tests/e2e/
fi

echo "== Debian package (cargo deb, dpkg -i, run, dpkg --purge)"
bash tests/packaging/test_deb.sh
