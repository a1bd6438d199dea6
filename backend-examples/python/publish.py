#!/usr/bin/env python3
"""Publish one message to a cometbox mailbox with redis-py.

    python3 publish.py MAILBOX [PAYLOAD]     # PAYLOAD omitted: read stdin as bytes

Prints how many waiting subscribers the gateway handed the message to.
The socket path comes from COMETBOX_SOCKET (default /tmp/cometbox.sock).
"""
import os
import sys

import redis

SOCKET = os.environ.get("COMETBOX_SOCKET", "/tmp/cometbox.sock")


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    mailbox = sys.argv[1]
    payload = sys.argv[2].encode() if len(sys.argv) == 3 else sys.stdin.buffer.read()
    # One client per process is what an app keeps: redis-py pools connections.
    r = redis.Redis(unix_socket_path=SOCKET)
    print(r.publish(mailbox, payload))


if __name__ == "__main__":
    main()
