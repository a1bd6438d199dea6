#!/usr/bin/env bash
# The Debian package, end to end on this machine: `cargo deb` builds it,
# `dpkg -i` installs it, `systemd-analyze verify` checks the installed unit,
# the gateway runs as the packaged user on the packaged config (systemd need
# not be running: the test makes /run/cometbox as RuntimeDirectory would),
# redis-cli publishes, curl reads, and `dpkg --purge` leaves nothing behind.
#
# Needs root (it installs into the machine). It refuses to run where a
# cometbox package or user already exists, since it purges them at the end.
set -euo pipefail
cd "$(dirname "$0")/../.."

if [ "$(id -u)" != 0 ]; then
    echo "SKIP tests/packaging/test_deb.sh: needs root (it installs the package into this machine with dpkg -i)"
    exit 0
fi
if dpkg-query -W -f='${Status}' cometbox 2>/dev/null | grep -q installed || getent passwd cometbox >/dev/null; then
    echo "SKIP tests/packaging/test_deb.sh: cometbox is already installed here (a package or a user); the test would purge it" >&2
    exit 0
fi
for tool in systemd-analyze:systemd redis-cli:redis-tools curl:curl setpriv:util-linux; do
    command -v "${tool%%:*}" >/dev/null || { echo "FAIL: ${tool%%:*} is missing: apt-get install ${tool##*:} (tests/run-all.sh does)" >&2; exit 1; }
done
if ! command -v cargo-deb >/dev/null; then
    echo "== installing cargo-deb (cargo install cargo-deb --locked)"
    cargo install --quiet cargo-deb --locked
fi

passed=0 failed=0
ok() { echo "ok - $*"; passed=$((passed + 1)); }
not_ok() { echo "not ok - $*" >&2; failed=$((failed + 1)); }
check() { # check "what" command...
    local what=$1; shift
    if "$@"; then ok "$what"; else not_ok "$what"; fi
}

work=$(mktemp -d) gateway=
cleanup() {
    [ -n "$gateway" ] && kill "$gateway" 2>/dev/null && wait "$gateway" 2>/dev/null
    getent passwd cometbox-test-app >/dev/null && userdel cometbox-test-app
    dpkg-query -W cometbox >/dev/null 2>&1 && dpkg --purge cometbox >/dev/null 2>&1
    rm -rf "$work"
}
trap cleanup EXIT

echo "== cargo deb"
deb=$(cargo deb 2>"$work/cargo-deb.log" | tail -n 1) || { cat "$work/cargo-deb.log" >&2; exit 1; }
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
check "cargo deb built cometbox_${version}_amd64.deb" test "$(basename "$deb")" = "cometbox_${version}_amd64.deb"

echo "== dpkg -i $(basename "$deb")"
dpkg -i "$deb" >"$work/dpkg-i.log" 2>&1 || { cat "$work/dpkg-i.log" >&2; exit 1; }
unit=/usr/lib/systemd/system/cometbox.service
# What systemd's RuntimeDirectory=cometbox / RuntimeDirectoryMode=0755 make
# before ExecStartPre runs `cometbox -t`, which checks (as the start does)
# that the backend socket's directory exists.
install -d -o cometbox -g cometbox -m 0755 /run/cometbox
check "/usr/bin/cometbox is installed and runs" /usr/bin/cometbox -t -c /etc/cometbox/gateway.conf
check "/etc/cometbox/gateway.conf is a conffile" \
    grep -qx ' /etc/cometbox/gateway.conf [0-9a-f]*' <(dpkg-query -W -f='${Conffiles}\n' cometbox)
check "the unit is installed and enabled" test -f "$unit" -a -L /etc/systemd/system/multi-user.target.wants/cometbox.service
check "the docs are in /usr/share/doc/cometbox" \
    test -f /usr/share/doc/cometbox/README.md -a -f /usr/share/doc/cometbox/docs/deploy.md -a -f /usr/share/doc/cometbox/examples/nginx-site.conf
check "system user and group cometbox exist" \
    test "$(id -gn cometbox):$(getent passwd cometbox | cut -d: -f7)" = "cometbox:/usr/sbin/nologin"
check "systemd-analyze verify $unit" systemd-analyze verify "$unit"
# shellcheck disable=SC2016 # $MAINPID is systemd's, literally
for line in "User=cometbox" "RuntimeDirectory=cometbox" "StateDirectory=cometbox" \
    "ExecStartPre=/usr/bin/cometbox -t -c /etc/cometbox/gateway.conf" 'ExecReload=/bin/kill -HUP $MAINPID' \
    "NoNewPrivileges=yes" "ProtectSystem=strict" "ProtectHome=yes" "PrivateTmp=yes" "LimitNOFILE=65536"; do
    check "the unit says $line" grep -qxF "$line" "$unit"
done

echo "== the gateway as user cometbox on /etc/cometbox/gateway.conf"
config=/etc/cometbox/gateway.conf
if (exec 3<>/dev/tcp/127.0.0.1/8080) 2>/dev/null; then
    # Something else here holds the packaged port: the same config on a free one.
    config=$work/gateway.conf
    printf 'include "/etc/cometbox/gateway.conf"\nserver.port := 0\n' >"$config"
    chmod 644 "$config" && chmod 755 "$work"
    echo "# 127.0.0.1:8080 is in use here: running /etc/cometbox/gateway.conf with server.port := 0"
fi
check "cometbox -t passes as user cometbox (the unit's ExecStartPre)" \
    setpriv --reuid=cometbox --regid=cometbox --init-groups -- /usr/bin/cometbox -t -c "$config"
RUST_LOG=info setpriv --reuid=cometbox --regid=cometbox --init-groups -- \
    /usr/bin/cometbox -c "$config" 2>"$work/gateway.log" &
gateway=$!
for _ in $(seq 200); do
    grep -q "listening for HTTP" "$work/gateway.log" && break
    kill -0 "$gateway" 2>/dev/null || break
    sleep 0.05
done
addr=$(sed -n 's/.*listening for HTTP on \([^ ]*\).*/\1/p' "$work/gateway.log")
if [ -z "$addr" ]; then
    cat "$work/gateway.log" >&2
    echo "FAIL: the gateway did not start" >&2
    exit 1
fi
ok "the gateway started as user cometbox on $addr"
sock=/run/cometbox/cometbox.sock
check "the socket is $sock, cometbox:cometbox, mode 660" test "$(stat -c '%U:%G %a' "$sock")" = "cometbox:cometbox 660"

# The app's user may publish once it is in group cometbox, and not before.
useradd --system --no-create-home --shell /usr/sbin/nologin cometbox-test-app
as_app() { setpriv --reuid=cometbox-test-app --regid=cometbox-test-app --init-groups -- "$@"; }
check "a user outside group cometbox cannot open the socket" \
    test "$(as_app redis-cli -s "$sock" PING 2>&1)" != "PONG"
usermod -a -G cometbox cometbox-test-app
check "the app's user, added to group cometbox, can" test "$(as_app redis-cli -s "$sock" PING)" = "PONG"

curl -s --max-time 20 "http://$addr/mailbox/deb-test" >"$work/poll.json" &
poll=$!
for _ in $(seq 200); do
    [ "$(redis-cli -s "$sock" PUBSUB NUMSUB deb-test | tail -n 1)" = 1 ] && break
    sleep 0.05
done
check "redis-cli PUBLISH reaches the waiting long-poll" \
    test "$(as_app redis-cli -s "$sock" PUBLISH deb-test '{"text":"from the package"}')" = 1
wait "$poll"
check "curl read the message" grep -qF '"data":"{\"text\":\"from the package\"}"' "$work/poll.json"

kill -TERM "$gateway"
wait "$gateway" && status=0 || status=$?
gateway=
check "SIGTERM stops it cleanly (exit 0)" test "$status" = 0
check "and the socket is gone" test ! -e "$sock"
userdel cometbox-test-app

echo "== dpkg --purge cometbox"
dpkg --purge cometbox >"$work/dpkg-purge.log" 2>&1 || { cat "$work/dpkg-purge.log" >&2; not_ok "dpkg --purge"; }
check "the purge said nothing on stderr" test -z "$(grep -iv '^\(Removing\|Purging\|(Reading\)' "$work/dpkg-purge.log")"
check "the package is gone" test -z "$(dpkg-query -W -f='${Status}' cometbox 2>/dev/null | grep installed)"
check "binary, unit and config are gone" test ! -e /usr/bin/cometbox -a ! -e "$unit" -a ! -e /etc/cometbox \
    -a ! -e /etc/systemd/system/multi-user.target.wants/cometbox.service
check "user and group cometbox are gone" test -z "$(getent passwd cometbox)$(getent group cometbox)"
check "/run/cometbox and /var/lib/cometbox are gone" test ! -e /run/cometbox -a ! -e /var/lib/cometbox

echo "test_deb: $passed passed, $failed failed"
[ "$failed" = 0 ]
