// Bayeux with the real npm clients, unmodified: faye 1.4 and cometd 9 (with
// cometd-nodejs-client), each over long-polling and over WebSocket, against
// the real gateway; backends publish over the Redis-protocol socket.
import assert from "node:assert/strict";
import { createRequire } from "node:module";
import net from "node:net";
import { after, before, describe, test } from "node:test";
import { cleanup, publisher, sleep, startGateway } from "../e2e/harness.mjs";

const require = createRequire(import.meta.url);
const faye = require("faye");
const { adapt } = await import("cometd-nodejs-client");
adapt();
const { CometD } = await import("cometd");

after(cleanup);

/// Resolves when `pred()` holds, polling; fails after `ms`.
async function until(pred, ms = 10000, what = "condition") {
  const t0 = Date.now();
  while (!pred()) {
    if (Date.now() - t0 > ms) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

// One interface over both clients: subscribe (resolves once the server
// acknowledged), publish (resolves with the ack or rejects with its error),
// close. `transport` is "long-polling" or "websocket".
function fayeClient(url, transport) {
  const client = new faye.Client(url, { timeout: 10 });
  // faye handshakes over HTTP, then moves to WebSocket when the server
  // offers it and the socket opens.
  if (transport === "long-polling") client.disable("websocket");
  return {
    kind: "faye",
    async subscribe(channel, onMessage) {
      const sub = client.subscribe(channel, onMessage);
      await new Promise((ok, fail) => sub.then(ok, fail));
      return sub;
    },
    publish(channel, data) {
      return new Promise((ok, fail) => client.publish(channel, data).then(ok, fail));
    },
    transportName: () => client._dispatcher._transport?.connectionType,
    close: () => client.disconnect(),
    raw: client,
  };
}

function cometdClient(url, transport) {
  const cometd = new CometD();
  cometd.configure({ url, logLevel: "warn", maxNetworkDelay: 5000 });
  if (transport === "long-polling") cometd.unregisterTransport("websocket");
  let ready = new Promise((ok, fail) =>
    cometd.handshake((reply) => (reply.successful ? ok() : fail(new Error(JSON.stringify(reply))))),
  );
  return {
    kind: "cometd",
    async subscribe(channel, onMessage) {
      await ready;
      return new Promise((ok, fail) =>
        cometd.subscribe(channel, (m) => onMessage(m.data, m), (reply) =>
          reply.successful ? ok(reply) : fail(new Error(reply.error)),
        ),
      );
    },
    async publish(channel, data) {
      await ready;
      return new Promise((ok, fail) =>
        cometd.publish(channel, data, (reply) => (reply.successful ? ok(reply) : fail(new Error(reply.error)))),
      );
    },
    transportName: () => cometd.getTransport()?.type,
    close: () => new Promise((ok) => cometd.disconnect(ok)),
    raw: cometd,
  };
}

const clients = { faye: fayeClient, cometd: cometdClient };

/// 500 PUBLISH commands written to the backend socket in one go.
function flood(socket, mailbox, count) {
  return new Promise((resolve, reject) => {
    const sock = net.connect(socket);
    let wire = "";
    for (let i = 0; i < count; i++) {
      const payload = JSON.stringify({ n: i });
      wire += `*3\r\n$7\r\nPUBLISH\r\n$${mailbox.length}\r\n${mailbox}\r\n$${payload.length}\r\n${payload}\r\n`;
    }
    let replies = 0;
    sock.on("data", (chunk) => {
      replies += chunk.toString().split("\r\n").filter((l) => l.startsWith(":")).length;
      if (replies >= count) sock.end(resolve);
    });
    sock.on("error", reject);
    sock.write(wire);
  });
}

describe("Bayeux with the npm clients", () => {
  let gw, redis;
  before(async () => {
    gw = await startGateway({ conf: "mailbox.poll-timeout = 5\nmailbox.max-messages = 1000\n" });
    redis = await publisher(gw);
  });

  for (const kind of Object.keys(clients)) {
    for (const transport of ["long-polling", "websocket"]) {
      describe(`${kind} over ${transport}`, () => {
        let c;
        const url = () => `${gw.url}/bayeux`;
        const room = (name) => `${kind}-${transport}-${name}`;
        before(() => {
          c = clients[kind](url(), transport);
        });
        after(() => c.close());

        test("JSON arrives as a value, text as a string, a burst of 20 in order", async () => {
          const got = [];
          await c.subscribe(`/t/${room("basic")}`, (data) => got.push(data));
          await redis.publish(`t/${room("basic")}`, JSON.stringify({ text: "hi", n: [1, 2] }));
          await redis.publish(`t/${room("basic")}`, "plain text");
          for (let i = 0; i < 20; i++) await redis.publish(`t/${room("basic")}`, JSON.stringify(i));
          await until(() => got.length >= 22, 10000, "22 messages");
          assert.deepEqual(got[0], { text: "hi", n: [1, 2] });
          assert.equal(got[1], "plain text");
          assert.deepEqual(got.slice(2), [...Array(20).keys()]);
          assert.equal(c.transportName(), transport);
        });

        test("wildcards: /* one segment, /** any depth, for mailboxes published later", async () => {
          const one = [];
          const any = [];
          await c.subscribe(`/w/${room("wild")}/*`, (data) => one.push(data));
          await c.subscribe(`/w/${room("wild")}/**`, (data) => any.push(data));
          await redis.publish(`w/${room("wild")}/a`, '"a"');
          await redis.publish(`w/${room("wild")}/b/c`, '"b/c"');
          await redis.publish(`w/${room("wild")}/d`, '"d"');
          await until(() => any.length >= 3, 10000, "3 wildcard messages");
          await sleep(200);
          assert.deepEqual(one, ["a", "d"]);
          assert.deepEqual(any, ["a", "b/c", "d"]);
        });

        test("500 pipelined publishes arrive exactly once, in order", async () => {
          const got = [];
          await c.subscribe(`/f/${room("flood")}`, (data) => got.push(data.n));
          await flood(gw.socket, `f/${room("flood")}`, 500);
          await until(() => got.length >= 500, 20000, "500 messages");
          await sleep(300);
          assert.equal(got.length, 500);
          assert.deepEqual(got, [...Array(500).keys()]);
        });

        test("client publish is refused by default", async () => {
          await assert.rejects(c.publish(`/p/${room("refused")}`, { x: 1 }), /403::publish not allowed/);
        });
      });
    }
  }
});

describe("client publish when enabled", () => {
  let gw;
  before(async () => {
    gw = await startGateway({ conf: 'mailbox.poll-timeout = 5\nbayeux.client-publish = "enable"\n' });
  });

  for (const transport of ["long-polling", "websocket"]) {
    test(`a faye publish reaches a cometd subscriber and a plain long-poll (${transport})`, async () => {
      const mailbox = `pub/${transport}`;
      const sub = cometdClient(`${gw.url}/bayeux`, transport);
      const pub = fayeClient(`${gw.url}/bayeux`, transport);
      try {
        const got = [];
        await sub.subscribe(`/${mailbox}`, (data) => got.push(data));
        const poll = fetch(`${gw.url}/mailbox/${mailbox}`).then((r) => r.json());
        await sleep(100);
        await pub.publish(`/${mailbox}`, { from: "faye", n: 1 });
        await until(() => got.length >= 1, 10000, "the published message");
        assert.deepEqual(got, [{ from: "faye", n: 1 }]);
        const answer = await poll;
        assert.equal(answer.messages.length, 1);
        assert.deepEqual(JSON.parse(answer.messages[0].data), { from: "faye", n: 1 });
      } finally {
        await sub.close();
        pub.close();
      }
    });
  }
});

describe("protocol edges, on the wire", () => {
  let gw;
  before(async () => {
    gw = await startGateway({ conf: "mailbox.poll-timeout = 5\n" });
  });
  const post = (path, body, type = "application/json") =>
    fetch(`${gw.url}/bayeux${path}`, { method: "POST", headers: { "Content-Type": type }, body });

  test("an unknown clientId is told to handshake; a faye client recovers by itself", async () => {
    const r = await post(
      "/connect",
      JSON.stringify([{ channel: "/meta/connect", clientId: "nobody", connectionType: "long-polling", id: "7" }]),
    );
    assert.equal(r.status, 200);
    const [reply] = await r.json();
    assert.equal(reply.successful, false);
    assert.equal(reply.id, "7");
    assert.equal(reply.advice.reconnect, "handshake");
    // A real client whose session vanished (the gateway restarted) handshakes
    // again and resubscribes: simulated by forgetting its clientId server-side
    // through a disconnect sent behind its back.
    const c = fayeClient(`${gw.url}/bayeux`, "long-polling");
    const got = [];
    await c.subscribe("/edge/rehandshake", (d) => got.push(d));
    const first = c.raw._dispatcher.clientId;
    await post("", JSON.stringify([{ channel: "/meta/disconnect", clientId: first }]));
    await until(() => c.raw._dispatcher.clientId && c.raw._dispatcher.clientId !== first, 15000, "a new clientId");
    const redis = await publisher(gw);
    await sleep(500);
    await redis.publish("edge/rehandshake", '"back"');
    await until(() => got.includes("back"), 10000, "delivery after re-handshake");
    c.close();
  });

  test("malformed bodies get 400 and the gateway serves on", async () => {
    for (const body of ["{", "[1,2]", "\"text\"", "[]", ""]) {
      const r = await post("", body);
      assert.equal(r.status, 400, body);
    }
    const r = await post(
      "",
      JSON.stringify([
        { id: "a" },
        { channel: "nope", id: "b" },
        { channel: "/meta/bogus", id: "c" },
        { channel: "/meta/handshake", version: "1.0", supportedConnectionTypes: ["long-polling"], id: "d" },
      ]),
    );
    const replies = await r.json();
    const byId = Object.fromEntries(replies.map((m) => [m.id, m]));
    assert.match(byId.a.error, /^400::/);
    assert.match(byId.b.error, /^405::/);
    assert.match(byId.c.error, /^400::/);
    assert.equal(byId.d.successful, true);
  });
});
