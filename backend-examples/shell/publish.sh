#!/bin/sh
# Publish one message with redis-cli (Debian: apt-get install redis-tools).
#
#   ./publish.sh MAILBOX [PAYLOAD]    # PAYLOAD omitted: read stdin as bytes
#
# Prints how many waiting subscribers the gateway handed the message to.
# Socket: COMETBOX_SOCKET (default /tmp/cometbox.sock).
set -eu
socket=${COMETBOX_SOCKET:-/tmp/cometbox.sock}
case $# in
1) exec redis-cli -s "$socket" -x PUBLISH "$1" ;; # -x: the last argument is stdin, byte for byte
2) exec redis-cli -s "$socket" PUBLISH "$1" "$2" ;;
*) echo "usage: $0 MAILBOX [PAYLOAD]" >&2; exit 2 ;;
esac
