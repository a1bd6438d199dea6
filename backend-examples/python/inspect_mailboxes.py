#!/usr/bin/env python3
"""Ask the gateway about mailboxes with redis-py's generic command call.

    python3 inspect_mailboxes.py numsub MAILBOX...   # subscribers per mailbox
    python3 inspect_mailboxes.py channels [PATTERN]  # mailboxes with subscribers
    python3 inspect_mailboxes.py del MAILBOX...      # drop retained mail
    python3 inspect_mailboxes.py info [SECTION]      # gateway statistics

Prints the reply as JSON. Socket: COMETBOX_SOCKET (default /tmp/cometbox.sock).
"""
import json
import os
import sys

import redis

SOCKET = os.environ.get("COMETBOX_SOCKET", "/tmp/cometbox.sock")


def main():
    if len(sys.argv) < 2 or sys.argv[1] not in ("numsub", "channels", "del", "info"):
        sys.exit(__doc__)
    what, args = sys.argv[1], sys.argv[2:]
    r = redis.Redis(unix_socket_path=SOCKET, decode_responses=True)
    if what == "numsub":
        # The reply is flat: [name, count, name, count, …].
        reply = r.execute_command("PUBSUB", "NUMSUB", *args)
        reply = dict(zip(reply[::2], reply[1::2]))
    elif what == "channels":
        reply = sorted(r.execute_command("PUBSUB", "CHANNELS", *args))
    elif what == "del":
        reply = r.execute_command("DEL", *args)
    else:
        reply = r.execute_command("INFO", *args)  # parsed into a dict
    print(json.dumps(reply, sort_keys=True))


if __name__ == "__main__":
    main()
