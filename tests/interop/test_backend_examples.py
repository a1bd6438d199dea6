"""The backend examples, run as their READMEs say, with each ecosystem's own
Redis client: redis-py, redis-rb, phpredis, predis, node-redis, ioredis,
redis-cli and socat.

A runtime that is missing fails its tests with what to install: tests/run-all.sh
installs all of them, so a green run means every client was exercised.
"""
import base64
import json
import os
import pathlib
import shutil
import subprocess
import sys
import threading
import time

import httpx
import pytest
import redis

ROOT = pathlib.Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "backend-examples"
NODE_MODULES = ROOT / "tests" / "node" / "node_modules"

# What apps publish: each must reach the browser byte for byte.
PAYLOADS = {
    "ascii": b"deploy finished at 12:00",
    "utf8": "Gr\u00fc\u00dfe aus K\u00f6ln \u2615 \U0001f680 \u4f60\u597d".encode(),
    "json": json.dumps(
        {"type": "chat", "user": "alice", "text": 'she said "hi" \\o/', "n": [1, 2.5, None, True]}
    ).encode(),
    "512kb": bytes((i * 7 + i // 251) % 94 + 32 for i in range(512 * 1024)),
    "crlf-nul": b"line one\r\nline two\nline three\rnul:\x00:end\x00",
    "binary": bytes(range(256)) * 4,
}


def require_runtime(*probes):
    """Fail, loudly, when the runtime a client needs is not installed."""
    for probe, install in probes:
        ok = shutil.which(probe) if not probe.startswith("/") else pathlib.Path(probe).exists()
        if not ok:
            pytest.fail(f"{probe} is missing: install {install} (tests/run-all.sh does, as root)")


def php_has_redis_extension():
    out = subprocess.run(["php", "-m"], capture_output=True, text=True).stdout.split()
    if "redis" not in out:
        pytest.fail("PHP's redis extension is missing: apt-get install php-redis")


def copy_node_example(source, folder):
    """The node example's sources in `folder`, with the test suite's
    node_modules (same packages, no network).

    A reader who ran `npm install` in backend-examples/node, as its README
    says, has a node_modules (and a lock file) there: those are not copied,
    so the tests do not depend on the state of the examples folder."""
    shutil.copytree(source, folder, ignore=shutil.ignore_patterns("node_modules", "package-lock.json"))
    (folder / "node_modules").symlink_to(NODE_MODULES)
    return folder


@pytest.fixture
def node_example(tmp_path):
    """The node example folder after `npm install`."""
    if not (NODE_MODULES / "redis").exists():
        pytest.fail(f"{NODE_MODULES} lacks node-redis: npm ci --prefix tests/node")
    return copy_node_example(EXAMPLES / "node", tmp_path / "node-example")


def test_node_fixture_ignores_an_npm_install_in_the_examples_folder(tmp_path):
    # What `npm install` leaves in backend-examples/node: the fixture used to
    # copy it and then fail on its own symlink (FileExistsError).
    source = tmp_path / "examples-node"
    shutil.copytree(EXAMPLES / "node", source, ignore=shutil.ignore_patterns("node_modules", "package-lock.json"))
    (source / "node_modules" / "redis").mkdir(parents=True)
    (source / "package-lock.json").write_text("{}")
    folder = copy_node_example(source, tmp_path / "copy")
    assert (folder / "node_modules").resolve() == NODE_MODULES.resolve()
    assert not (folder / "package-lock.json").exists()
    assert (folder / "publish.mjs").exists()


def client_commands(name, node_folder=None):
    """(publish, inspect) argv prefixes for a client, as its README runs them."""
    py = sys.executable  # the .venv's python, which has redis-py and PyJWT
    if name == "redis-py":
        return [py, EXAMPLES / "python/publish.py"], [py, EXAMPLES / "python/inspect_mailboxes.py"]
    if name == "redis-rb":
        require_runtime(("ruby", "ruby (Debian ruby ruby-redis)"))
        return ["ruby", EXAMPLES / "ruby/publish.rb"], ["ruby", EXAMPLES / "ruby/inspect_mailboxes.rb"]
    if name in ("phpredis", "predis"):
        require_runtime(("php", "php-cli"))
        if name == "phpredis":
            php_has_redis_extension()
            flag = []
        else:
            require_runtime(("/usr/share/php/Predis/autoload.php", "php-predis"))
            flag = ["--predis"]
        return (
            ["php", EXAMPLES / "php/publish.php", *flag],
            ["php", EXAMPLES / "php/inspect_mailboxes.php", *flag],
        )
    if name in ("node-redis", "ioredis"):
        require_runtime(("node", "nodejs"))
        flag = ["--ioredis"] if name == "ioredis" else []
        return (
            ["node", node_folder / "publish.mjs", *flag],
            ["node", node_folder / "inspect-mailboxes.mjs", *flag],
        )
    if name == "redis-cli":
        require_runtime(("redis-cli", "redis-tools"))
        return ["sh", EXAMPLES / "shell/publish.sh"], None
    if name == "socat":
        require_runtime(("socat", "socat"))
        return ["sh", EXAMPLES / "shell/publish-socat.sh"], None
    raise AssertionError(name)


CLIENTS = ["redis-py", "redis-rb", "phpredis", "predis", "node-redis", "ioredis", "redis-cli", "socat"]


def run(argv, gw, stdin=b"", env=None, cwd=None):
    proc = subprocess.run(
        [str(a) for a in argv],
        input=stdin,
        capture_output=True,
        timeout=60,
        cwd=cwd,
        env={**os.environ, "COMETBOX_SOCKET": gw.socket, **(env or {})},
    )
    # The connect handshake (HELLO, CLIENT SETINFO, INFO for ioredis…) and
    # the command must pass without a word on stderr.
    assert proc.returncode == 0 and proc.stderr == b"", (
        f"{argv} exited {proc.returncode}: {proc.stderr.decode(errors='replace')}"
    )
    return proc.stdout.decode().strip()


def payload_of(message):
    if message.get("encoding") == "base64":
        return base64.b64decode(message["data"])
    return message["data"].encode()


def wait_subscribers(gw, mailbox, n, timeout=10):
    probe = redis.Redis(unix_socket_path=gw.socket)
    deadline = time.time() + timeout
    while time.time() < deadline:
        if probe.pubsub_numsub(mailbox)[0][1] == n:
            return
        time.sleep(0.01)
    raise AssertionError(f"{mailbox} never had {n} waiting subscribers")


class Waiters:
    """Long-polls held open on a mailbox, as browsers would."""

    def __init__(self, gw, mailbox, n):
        self.bodies = [None] * n
        self.threads = [threading.Thread(target=self.poll, args=(gw, mailbox, i)) for i in range(n)]
        for t in self.threads:
            t.start()
        wait_subscribers(gw, mailbox, n)

    def poll(self, gw, mailbox, i):
        self.bodies[i] = httpx.get(gw.url(f"/mailbox/{mailbox}"), timeout=30).json()

    def join(self):
        for t in self.threads:
            t.join(30)
        return self.bodies


@pytest.mark.parametrize("client", CLIENTS)
def test_example_publishes_every_payload_byte_for_byte(start_gateway, node_example, client):
    gw = start_gateway()
    publish, _ = client_commands(client, node_example)
    for kind, payload in PAYLOADS.items():
        mailbox = f"{client}-{kind}"
        waiters = Waiters(gw, mailbox, 2)
        # Payloads go through stdin: argv cannot carry NULs.
        count = run(publish + [mailbox], gw, stdin=payload, cwd=node_example)
        assert count == "2", f"{client} {kind}: publish returned {count!r}"
        for body in waiters.join():
            [message] = body["messages"]
            assert payload_of(message) == payload, f"{client} {kind}: bytes differ"
    # The argument form the READMEs show first, with nobody waiting: 0, and
    # the message is retained for the next reader.
    assert run(publish + ["argv-form", '{"text":"hi"}'], gw, cwd=node_example) == "0"
    body = httpx.get(gw.url("/mailbox/argv-form"), timeout=10).json()
    assert [m["data"] for m in body["messages"]] == ['{"text":"hi"}']


@pytest.mark.parametrize("client", ["redis-py", "redis-rb", "phpredis", "predis", "node-redis", "ioredis"])
def test_generic_commands_pubsub_del_info(start_gateway, node_example, client):
    gw = start_gateway()
    publish, inspect = client_commands(client, node_example)

    def ask(*args):
        return json.loads(run(inspect + list(args), gw, cwd=node_example))

    waiters = Waiters(gw, "room:1", 1)
    assert ask("numsub", "room:1", "room:2") == {"room:1": 1, "room:2": 0}
    assert ask("channels") == ["room:1"]
    assert ask("channels", "room:*") == ["room:1"]
    assert ask("channels", "user:*") == []
    info = ask("info")
    assert str(info["loading"]) == "0"
    assert "cometbox" in json.dumps(info)
    assert run(publish + ["room:1", "wake"], gw, cwd=node_example) == "1"
    waiters.join()

    run(publish + ["old-news", "retained"], gw, cwd=node_example)
    assert ask("del", "old-news", "never-existed") == 1
    # DEL dropped the retained mail: a new reader sees only what came after.
    run(publish + ["old-news", "fresh"], gw, cwd=node_example)
    body = httpx.get(gw.url("/mailbox/old-news"), timeout=10).json()
    assert [m["data"] for m in body["messages"]] == ["fresh"]


def test_redis_cli_generic_commands(gateway):
    require_runtime(("redis-cli", "redis-tools"))

    def cli(*args):
        return subprocess.run(
            ["redis-cli", "-s", gateway.socket, *args], capture_output=True, text=True, timeout=30
        ).stdout.strip()

    waiters = Waiters(gateway, "ops", 1)
    assert cli("PUBSUB", "NUMSUB", "ops").splitlines() == ["ops", "1"]
    assert cli("PUBSUB", "CHANNELS", "o*") == "ops"
    assert "loading:0" in cli("INFO")
    assert cli("PUBLISH", "ops", "hello") == "1"
    waiters.join()
    assert cli("DEL", "ops") == "1"


def read_stream(gw, mailbox, expected, result):
    """NDJSON streaming subscriber: collects `expected` messages."""
    with httpx.stream("GET", gw.url(f"/mailbox/{mailbox}?transport=stream"), timeout=60) as resp:
        for line in resp.iter_lines():
            if not line:
                continue  # heartbeat
            result.append(json.loads(line)["data"])
            if len(result) == expected:
                return


NODE_PIPELINE = """
import { connect } from "./cometbox-client.mjs";
const [mailbox, count] = [process.argv[2], Number(process.argv[3])];
const client = await connect();
// node-redis pipelines commands issued in the same tick into one write.
const replies = await Promise.all(
  Array.from({ length: count }, (_, i) => client.publish(mailbox, `seq:${i}`)),
);
console.log(replies.length);
await client.quit();
"""


@pytest.mark.parametrize("client", ["redis-py", "node-redis"])
def test_pipeline_of_10000_publishes_arrives_complete_and_in_order(start_gateway, node_example, client):
    gw = start_gateway("mailbox.max-messages = 10000\n")
    total = 10_000
    received = []
    reader = threading.Thread(target=read_stream, args=(gw, "firehose", total, received))
    reader.start()
    wait_subscribers(gw, "firehose", 1)
    if client == "redis-py":
        r = redis.Redis(unix_socket_path=gw.socket)
        pipe = r.pipeline(transaction=False)
        for i in range(total):
            pipe.publish("firehose", f"seq:{i}")
        replies = pipe.execute()
        assert len(replies) == total and set(replies) == {1}
    else:
        require_runtime(("node", "nodejs"))
        (node_example / "pipeline.mjs").write_text(NODE_PIPELINE)
        assert run(["node", node_example / "pipeline.mjs", "firehose", total], gw) == str(total)
    reader.join(60)
    assert received == [f"seq:{i}" for i in range(total)]


MINTERS = {
    "PyJWT": lambda: [sys.executable, EXAMPLES / "python/mint_token.py"],
    "ruby-jwt": lambda: (require_runtime(("ruby", "ruby ruby-jwt")), ["ruby", EXAMPLES / "ruby/mint_token.rb"])[1],
    "php": lambda: (require_runtime(("php", "php-cli")), ["php", EXAMPLES / "php/mint_token.php"])[1],
    "jsonwebtoken": None,  # needs the node folder, below
}


@pytest.mark.parametrize("minter", list(MINTERS))
def test_minted_tokens_open_exactly_the_granted_mailboxes(start_gateway, node_example, tmp_path, minter):
    secret = tmp_path / "jwt-secret"
    secret.write_text(base64.b64encode(os.urandom(48)).decode() + "\n")
    gw = start_gateway(f'auth.required = "enable"\nauth.jwt-secret-file = "{secret}"\n')
    if minter == "jsonwebtoken":
        require_runtime(("node", "nodejs"))
        argv = ["node", node_example / "mint-token.mjs"]
    else:
        argv = MINTERS[minter]()
    token = run(argv + ["user:alice", "room:*"], gw, env={"COMETBOX_JWT_SECRET_FILE": str(secret)})
    assert token.count(".") == 2

    r = redis.Redis(unix_socket_path=gw.socket)
    for mailbox in ("user:alice", "room:42", "user:bob"):
        r.publish(mailbox, f"for {mailbox}")

    def get(mailbox, **kw):
        return httpx.get(gw.url(f"/mailbox/{mailbox}"), timeout=10, **kw)

    for mailbox in ("user:alice", "room:42"):
        resp = get(mailbox, params={"token": token})
        assert resp.status_code == 200, resp.text
        assert [m["data"] for m in resp.json()["messages"]] == [f"for {mailbox}"]
    by_header = get("user:alice", headers={"Authorization": f"Bearer {token}"})
    assert by_header.status_code == 200
    refused = get("user:bob", params={"token": token})
    assert refused.status_code == 403 and refused.json() == {"error": "mailbox not granted"}
    assert get("user:alice").status_code == 401
    # The token never reaches the log.
    assert token not in gw.log()
