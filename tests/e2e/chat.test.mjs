// The chat demo in headless Chromium: the real gateway, the real app
// (backend-examples/chat), cometbox.js in a real browser.
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import {
  cleanup, freePort, launchBrowser, lines, openChat, publisher, removeLater, sleep, startChat, startGateway,
} from "./harness.mjs";

let browser;
before(async () => {
  browser = await launchBrowser();
});
after(cleanup);

const say = (text) => JSON.stringify({ name: "bot", text, at: Date.now() });

describe("two pages in one room", () => {
  let gw, chat;
  before(async () => {
    gw = await startGateway({ conf: 'mailbox.cors-origins = ( "*" )' });
    chat = await startChat(gw);
  });

  for (const transport of ["sse", "longpoll", "websocket"]) {
    test(`a line typed in one page appears in the other within 1 s, in order (${transport})`, async () => {
      const room = `lobby-${transport}`;
      const alice = await openChat(browser, chat, { room, transport, name: "alice" });
      const bob = await openChat(browser, chat, { room, transport, name: "bob" });
      assert.equal(await bob.evaluate(() => window.chat.transport), transport);
      const sent = ["hello bob", "how is the weather?", "ünïcødé ✓ 🚀", "<b>not bold</b>", "last line"];
      const delays = [];
      for (const [i, text] of sent.entries()) {
        await alice.fill("#text", text);
        const t0 = Date.now();
        await alice.press("#text", "Enter");
        await bob.waitForFunction((n) => window.chat.lines.length >= n, i + 1, { timeout: 1000, polling: 10 });
        delays.push(Date.now() - t0);
      }
      console.log(`${transport}: typed-to-shown delays ${delays.join(", ")} ms`);
      assert.deepEqual(await lines(bob), sent);
      await alice.waitForFunction((n) => window.chat.lines.length >= n, sent.length);
      assert.deepEqual(await lines(alice), sent, "the sender sees its own lines too");
      // Text is shown as text, never as markup.
      assert.equal(await bob.locator("#log li b", { hasText: "not bold" }).count(), 0);
      assert.deepEqual([...alice.errors, ...bob.errors], []);
      await alice.close();
      await bob.close();
    });
  }

  test("the ES module form (/cometbox.mjs) subscribes too", async () => {
    const page = await browser.newPage();
    await page.goto(chat.url);
    const pub = await publisher(gw);
    await page.evaluate(async (gateway) => {
      const { default: cb, subscribe } = await import(gateway + "/cometbox.mjs");
      window.esm = { got: [], same: cb.subscribe === subscribe };
      cb.subscribe("/mailbox/esm", { baseUrl: gateway, transport: "sse", onMessage: (d, id) => window.esm.got.push([d, id]) });
    }, gw.url);
    await sleep(300);
    await pub.publish("esm", "from a module");
    await page.waitForFunction(() => window.esm.got.length === 1, null, { timeout: 5000 });
    const [[data, id]] = await page.evaluate(() => window.esm.got);
    assert.equal(data, "from a module");
    assert.match(id, /^[0-9a-f]+\.[0-9a-f]+-\d{10}$/);
    assert.equal(await page.evaluate(() => window.esm.same), true);
    await page.close();
  });
});

describe("resume", () => {
  for (const transport of ["sse", "websocket"]) {
    test(`planned reconnects every 2 s lose and repeat nothing, and a restarted gateway is rejoined with onMissed (${transport})`, async () => {
      const port = await freePort();
      const conf = 'mailbox.cors-origins = ( "*" )\nmailbox.stream-max-duration = 2\nmailbox.max-messages = 1000';
      let gw = await startGateway({ port, conf });
      removeLater(gw.dir);
      const chat = await startChat(gw);
      const page = await openChat(browser, chat, { room: `resume-${transport}`, transport });
      const pub = await publisher(gw);

      // 10 s of continuous publishing: five planned reconnects on the way.
      const sent = [];
      const end = Date.now() + 10000;
      for (let i = 0; Date.now() < end; i++) {
        sent.push(`seq ${i}`);
        await pub.publish(`room:resume-${transport}`, say(`seq ${i}`));
        await sleep(25);
      }
      await page.waitForFunction((n) => window.chat.lines.length >= n, sent.length, { timeout: 10000 });
      await sleep(500); // a duplicate would arrive now
      assert.deepEqual(await lines(page), sent, "every message exactly once, in order");
      const info = String(await pub.sendCommand(["INFO", "stats"]));
      const requests = Number(info.match(/total_http_requests:(\d+)/)[1]);
      assert.ok(requests >= 5, `the stream was renewed (${requests} requests)`);

      // Kill the gateway outright, start a new one on the same port.
      await gw.kill("SIGKILL");
      await sleep(300);
      gw = await startGateway({ port, conf, dir: gw.dir });
      await page.waitForFunction(() => window.chat.missed >= 1, null, { timeout: 20000 });
      await page.waitForFunction(() => window.chat.status === "open", null, { timeout: 20000 });
      const pub2 = await publisher(gw);
      await pub2.publish(`room:resume-${transport}`, say("after the restart"));
      await page.waitForFunction(() => window.chat.lines.at(-1).text === "after the restart", null, { timeout: 5000 });
      assert.equal(await page.evaluate(() => window.chat.missed), 1);
      assert.deepEqual(page.errors, []);
      await page.close();
    });
  }
});

describe("another origin", () => {
  test("subscribes through CORS when the gateway allows the page's origin", async () => {
    const chatPort = await freePort();
    const gw = await startGateway({ conf: `mailbox.cors-origins = ( "http://127.0.0.1:${chatPort}" )` });
    const chat = await startChat(gw, { port: chatPort });
    const page = await openChat(browser, chat, { room: "cors" });
    assert.equal(await page.evaluate(() => window.chat.transport), "sse", "auto picks EventSource");
    await (await publisher(gw)).publish("room:cors", say("over CORS"));
    await page.waitForFunction(() => window.chat.lines.length === 1, null, { timeout: 5000 });
    assert.deepEqual(await lines(page), ["over CORS"]);
    await page.close();
  });

  test("falls back to JSONP when the gateway sends no CORS headers", async () => {
    const gw = await startGateway();
    const chat = await startChat(gw);
    const page = await openChat(browser, chat, { room: "jsonp" });
    assert.equal(await page.evaluate(() => window.chat.transport), "jsonp");
    const pub = await publisher(gw);
    for (const text of ["one", "two", "three"]) await pub.publish("room:jsonp", say(text));
    await page.waitForFunction(() => window.chat.lines.length === 3, null, { timeout: 5000 });
    assert.deepEqual(await lines(page), ["one", "two", "three"]);
    await page.close();
  });
});

describe("private rooms", () => {
  test("a token function is called before each reconnect and expiring tokens lose nothing", async () => {
    const dir = (await startGateway()).dir; // a scratch dir for the secret
    const secret = path.join(dir, "jwt-secret");
    writeFileSync(secret, "a-secret-of-at-least-32-bytes-for-hs256-tokens\n");
    const gw = await startGateway({
      conf: `mailbox.cors-origins = ( "*" )\nauth.required = "enable"\nauth.jwt-secret-file = "${secret}"`,
    });
    // Tokens live 3 s: the stream ends when one expires.
    const chat = await startChat(gw, { env: { COMETBOX_JWT_SECRET_FILE: secret, TOKEN_TTL: "3" } });
    const page = await openChat(browser, chat, { room: "private", transport: "sse" });
    const pub = await publisher(gw);
    const sent = [];
    for (let i = 0; i < 80; i++) {
      sent.push(`secret ${i}`);
      await pub.publish("room:private", say(`secret ${i}`));
      await sleep(100);
    }
    await page.waitForFunction((n) => window.chat.lines.length >= n, sent.length, { timeout: 10000 });
    await sleep(300);
    assert.deepEqual(await lines(page), sent);
    const tokens = await page.evaluate(() => window.chat.tokens);
    assert.ok(tokens >= 3, `a fresh token per connection (${tokens} fetched)`);
    // Without a token the gateway refuses the room.
    const refused = await fetch(`${gw.url}/mailbox/room:private`);
    assert.equal(refused.status, 401);
    await page.close();
  });
});
