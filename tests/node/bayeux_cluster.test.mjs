// Bayeux in cluster mode with the real npm clients, unmodified: faye 1.4 and
// cometd 9 pinned to node A of two gateways sharing a real redis-server,
// over long-polling and over WebSocket; backends publish on node B.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { createRequire } from "node:module";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { cleanup, freePort, publisher, removeLater, sleep, startGateway } from "../e2e/harness.mjs";

const require = createRequire(import.meta.url);
const faye = require("faye");
const { adapt } = await import("cometd-nodejs-client");
adapt();
const { CometD } = await import("cometd");

let redisProc;
after(async () => {
  await cleanup();
  if (redisProc && redisProc.exitCode === null) {
    const exited = new Promise((r) => redisProc.on("exit", r));
    redisProc.kill();
    await exited;
  }
});

async function until(pred, ms = 15000, what = "condition") {
  const t0 = Date.now();
  while (!pred()) {
    if (Date.now() - t0 > ms) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

/// A redis-server of our own on a free port, no persistence.
async function startRedis() {
  const port = await freePort();
  const dir = mkdtempSync(path.join(tmpdir(), "cometbox-redis-"));
  removeLater(dir);
  const proc = spawn("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir], {
    stdio: "ignore",
  });
  redisProc = proc;
  for (let i = 0; ; i++) {
    const up = await new Promise((ok) => {
      const s = net.connect(port, "127.0.0.1", () => (s.end(), ok(true)));
      s.on("error", () => ok(false));
    });
    if (up) return port;
    if (i > 500) throw new Error("redis-server did not start");
    await sleep(20);
  }
}

function fayeClient(url, transport) {
  const client = new faye.Client(url, { timeout: 10 });
  if (transport === "long-polling") client.disable("websocket");
  return {
    async subscribe(channel, onMessage) {
      const sub = client.subscribe(channel, onMessage);
      await new Promise((ok, fail) => sub.then(ok, fail));
    },
    publish: (channel, data) => new Promise((ok, fail) => client.publish(channel, data).then(ok, fail)),
    transportName: () => client._dispatcher._transport?.connectionType,
    close: () => client.disconnect(),
  };
}

function cometdClient(url, transport) {
  const cometd = new CometD();
  cometd.configure({ url, logLevel: "warn", maxNetworkDelay: 5000 });
  if (transport === "long-polling") cometd.unregisterTransport("websocket");
  const ready = new Promise((ok, fail) =>
    cometd.handshake((reply) => (reply.successful ? ok() : fail(new Error(JSON.stringify(reply))))),
  );
  return {
    async subscribe(channel, onMessage) {
      await ready;
      return new Promise((ok, fail) =>
        cometd.subscribe(channel, (m) => onMessage(m.data), (reply) => (reply.successful ? ok() : fail(new Error(reply.error)))),
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
  };
}

const clients = { faye: fayeClient, cometd: cometdClient };

describe("Bayeux clients pinned to node A, backends publishing on node B", () => {
  let a, b, onB;
  before(async () => {
    const port = await startRedis();
    const conf =
      `cluster.redis = "redis://127.0.0.1:${port}"\nmailbox.poll-timeout = 5\n` +
      `mailbox.max-messages = 1000\nbayeux.client-publish = "enable"\n`;
    a = await startGateway({ conf });
    b = await startGateway({ conf });
    onB = await publisher(b);
  });

  for (const kind of Object.keys(clients)) {
    for (const transport of ["long-polling", "websocket"]) {
      describe(`${kind} over ${transport}`, () => {
        let c;
        const room = (name) => `${kind}-${transport}-${name}`;
        before(() => {
          c = clients[kind](`${a.url}/bayeux`, transport);
        });
        after(() => c.close());

        test("a value, a string, a burst of 20 in order, from the other node", async () => {
          const got = [];
          await onB.publish(`c/${room("basic")}`, '"before the subscription"');
          await c.subscribe(`/c/${room("basic")}`, (data) => got.push(data));
          await onB.publish(`c/${room("basic")}`, JSON.stringify({ text: "hi" }));
          await onB.publish(`c/${room("basic")}`, "plain text");
          for (let i = 0; i < 20; i++) await onB.publish(`c/${room("basic")}`, JSON.stringify(i));
          await until(() => got.length >= 22, 15000, "22 messages");
          await sleep(200);
          assert.deepEqual(got, [{ text: "hi" }, "plain text", ...Array(20).keys()]);
          assert.equal(c.transportName(), transport);
        });

        test("wildcards find mailboxes first published on the other node", async () => {
          const any = [];
          await c.subscribe(`/w/${room("wild")}/**`, (data) => any.push(data));
          await onB.publish(`w/${room("wild")}/a`, '"a"');
          await onB.publish(`w/${room("wild")}/b/c`, '"b/c"');
          await until(() => any.length >= 2, 15000, "2 wildcard messages");
          assert.deepEqual(any.sort(), ["a", "b/c"]);
        });

        test("a client's publish on node B reaches this client on node A", async () => {
          const got = [];
          await c.subscribe(`/p/${room("pub")}`, (data) => got.push(data));
          const other = cometdClient(`${b.url}/bayeux`, "long-polling");
          try {
            await other.publish(`/p/${room("pub")}`, { from: "node B" });
          } finally {
            await other.close();
          }
          await until(() => got.length >= 1, 15000, "the client publish");
          assert.deepEqual(got, [{ from: "node B" }]);
        });
      });
    }
  }

  test("500 pipelined publishes on node B reach a long-polling faye client on A once, in order", async () => {
    const c = fayeClient(`${a.url}/bayeux`, "long-polling");
    const got = [];
    await c.subscribe("/flood/cluster", (data) => got.push(data.n));
    await new Promise((resolve, reject) => {
      const sock = net.connect(b.socket);
      let wire = "";
      for (let i = 0; i < 500; i++) {
        const payload = JSON.stringify({ n: i });
        wire += `*3\r\n$7\r\nPUBLISH\r\n$13\r\nflood/cluster\r\n$${payload.length}\r\n${payload}\r\n`;
      }
      let replies = 0;
      sock.on("data", (chunk) => {
        replies += chunk.toString().split("\r\n").filter((l) => l.startsWith(":")).length;
        if (replies >= 500) sock.end(resolve);
      });
      sock.on("error", reject);
      sock.write(wire);
    });
    await until(() => got.length >= 500, 30000, "500 messages");
    await sleep(300);
    assert.deepEqual(got, [...Array(500).keys()]);
    await c.close();
  });
});
