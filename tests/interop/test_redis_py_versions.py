"""redis-py 5, 6, 7 and 8 (the versions apps run today) connect and publish.

run-all.sh installs each older major into its own `--target` folder under
.venv/redis-py/; 8 is the .venv's own. Each version runs in a child
interpreter so its import is the only redis on the path. A missing version
fails the test: a green run means every version was exercised.
"""
import json
import os
import pathlib
import subprocess
import sys
import threading

import httpx
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
OLDER = ["5.3.1", "6.4.0", "7.4.1"]

# What a Django/Flask app does on startup and per request, in both protocol
# versions the version supports: connect (redis-py 5+ sends HELLO 3 for
# protocol=3 and CLIENT SETINFO in every mode), publish, and the generic
# commands ops scripts use.
CHILD = r"""
import json, sys, redis
mailbox, protocol = sys.argv[1], int(sys.argv[2])
if redis.__version__.startswith("7.") and protocol == 3:
    # redis-py 7 turns on "maintenance notifications" for RESP3 and then
    # raises ValueError on every Unix-socket connection (it wants a host
    # name), whatever the server: a client bug that 8 fixed. Redis() does not
    # pass the opt-out on for Unix sockets, so build the pool (what a
    # redis-py 7 app on RESP3 has to do against real Redis too).
    from redis.maint_notifications import MaintNotificationsConfig
    r = redis.Redis(connection_pool=redis.ConnectionPool(
        connection_class=redis.UnixDomainSocketConnection, path=sys.argv[3], protocol=3,
        maint_notifications_config=MaintNotificationsConfig(enabled=False)))
else:
    r = redis.Redis(unix_socket_path=sys.argv[3], protocol=protocol)
out = {"version": redis.__version__, "ping": r.ping()}
# NUMSUB before PUBLISH: the parent saw the poll registered, so this is 1.
# After PUBLISH it would race: the poll's worker detaches it when it hands the
# message over, on its own thread, maybe after this connection's next command.
out["numsub"] = [[n.decode(), c] for n, c in r.pubsub_numsub(mailbox)]
out["published"] = r.publish(mailbox, "caf\u00e9 \u2615 from redis-py")
out["channels"] = sorted(c.decode() for c in r.pubsub_channels())
out["loading"] = r.info()["loading"]
out["deleted"] = r.delete("scratch-" + mailbox)
r.close()
print(json.dumps(out))
"""


def redis_py_path(version):
    if version.startswith("8"):
        return None
    path = ROOT / ".venv" / "redis-py" / version
    if not (path / "redis" / "__init__.py").exists():
        pytest.fail(
            f"redis-py {version} is not installed in {path}: "
            "tests/run-all.sh installs it (pip install --target)"
        )
    return path


@pytest.mark.parametrize("protocol", [2, 3])
@pytest.mark.parametrize("version", OLDER + ["8"])
def test_redis_py_version_publishes_to_a_waiting_subscriber(gateway, version, protocol):
    path = redis_py_path(version)
    mailbox = f"py{version.split('.')[0]}-resp{protocol}"
    # Hold a long-poll open, so PUBLISH has one subscriber to count.
    result = {}

    def poll():
        result["body"] = httpx.get(gateway.url(f"/mailbox/{mailbox}"), timeout=15).json()

    waiter = threading.Thread(target=poll)
    waiter.start()
    import redis  # the .venv's own, only to wait for the subscriber

    probe = redis.Redis(unix_socket_path=gateway.socket)
    for _ in range(500):
        if probe.pubsub_numsub(mailbox)[0][1] == 1:
            break
        threading.Event().wait(0.01)
    else:
        pytest.fail("the long-poll never registered")

    env = dict(os.environ)
    if path is not None:
        env["PYTHONPATH"] = str(path)
    child = subprocess.run(
        [sys.executable, "-c", CHILD, mailbox, str(protocol), gateway.socket],
        capture_output=True, text=True, env=env, timeout=30,
    )
    assert child.returncode == 0, child.stderr
    out = json.loads(child.stdout)
    waiter.join(15)

    assert out["version"] == version if path is not None else out["version"].startswith("8.")
    assert out["ping"] is True
    assert out["published"] == 1
    assert out["numsub"] == [[mailbox, 1]]  # the poll, waiting
    assert out["loading"] == 0
    assert out["deleted"] == 0
    [message] = result["body"]["messages"]
    assert message["data"] == "caf\u00e9 \u2615 from redis-py"
