#!/bin/sh
# Publish one message with nothing but socat (for machines without redis-cli).
#
#   ./publish-socat.sh MAILBOX [PAYLOAD]    # PAYLOAD omitted: read stdin as bytes
#
# Frames the command in RESP (lengths, then bytes), so any payload goes
# through unchanged: newlines, NULs, binary. Prints the subscriber count.
# Socket: COMETBOX_SOCKET (default /tmp/cometbox.sock).
set -eu
socket=${COMETBOX_SOCKET:-/tmp/cometbox.sock}
if [ $# -lt 1 ] || [ $# -gt 2 ]; then
    echo "usage: $0 MAILBOX [PAYLOAD]" >&2
    exit 2
fi
mailbox=$1
payload=$(mktemp)
trap 'rm -f "$payload"' EXIT
if [ $# = 2 ]; then printf '%s' "$2" >"$payload"; else cat >"$payload"; fi

# LC_ALL=C: lengths in bytes, not characters.
mailbox_len=$(printf '%s' "$mailbox" | LC_ALL=C wc -c)
payload_len=$(LC_ALL=C wc -c <"$payload")
reply=$({
    printf '*3\r\n$7\r\nPUBLISH\r\n$%d\r\n%s\r\n$%d\r\n' "$mailbox_len" "$mailbox" "$payload_len"
    cat "$payload"
    printf '\r\n*1\r\n$4\r\nQUIT\r\n' # QUIT: the gateway answers, then closes
} | socat -t 10 - UNIX-CONNECT:"$socket" | head -n 1 | tr -d '\r')

case $reply in
:*) echo "${reply#:}" ;;
*) echo "cometbox: $reply" >&2; exit 1 ;;
esac
