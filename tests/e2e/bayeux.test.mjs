// The browser build of Faye (faye-browser-min.js from the npm package, as
// shipped) on a page of another origin, in headless Chromium, against the
// real gateway: it subscribes over the cross-origin transports and receives
// what a backend publishes.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { createServer } from "node:http";
import { createRequire } from "node:module";
import path from "node:path";
import { after, before, test } from "node:test";
import { ROOT, cleanup, launchBrowser, publisher, startGateway } from "./harness.mjs";

const require = createRequire(path.join(ROOT, "tests/node/package.json"));
const FAYE = readFileSync(require.resolve("faye/client/faye-browser-min.js"));

let browser, gw, site;
before(async () => {
  browser = await launchBrowser();
  gw = await startGateway({ conf: 'mailbox.cors-origins = ( "*" )\nmailbox.poll-timeout = 5' });
  // The app's own site: another port, so another origin than the gateway.
  site = createServer((req, res) => {
    if (req.url === "/faye.js") {
      res.writeHead(200, { "Content-Type": "application/javascript" });
      return res.end(FAYE);
    }
    res.writeHead(200, { "Content-Type": "text/html" });
    const http = req.url.includes("http=1");
    res.end(`<!doctype html><title>faye</title><script src="/faye.js"></script>
<script>
  window.got = [];
  const client = (window.client = new Faye.Client(${JSON.stringify(`${gw.url}/bayeux`)}));
  ${http ? 'client.disable("websocket");' : ""}
  client.subscribe("/browser/room", (data) => window.got.push(data))
    .then(() => { window.subscribed = true; }, (e) => { window.failed = String(e && e.message); });
</script>`);
  });
  await new Promise((r) => site.listen(0, "127.0.0.1", r));
});
after(async () => {
  site?.close();
  await cleanup();
});

for (const [name, query, types] of [
  ["WebSocket", "", ["websocket"]],
  ["cross-origin HTTP", "?http=1", ["cross-origin-long-polling", "callback-polling"]],
]) {
  test(`faye-browser-min.js on another origin subscribes and receives (${name})`, async () => {
    const page = await browser.newPage();
    const errors = [];
    page.on("pageerror", (e) => errors.push(e));
    // localhost vs 127.0.0.1: another origin than the gateway's.
    await page.goto(`http://localhost:${site.address().port}/${query}`);
    await page.waitForFunction(() => window.subscribed || window.failed, null, { timeout: 15000 });
    assert.equal(await page.evaluate(() => window.failed), undefined);
    const redis = await publisher(gw);
    const room = "browser/room";
    await redis.publish(room, JSON.stringify({ text: `hello ${name}` }));
    await redis.publish(room, "plain ✓");
    await page.waitForFunction(() => window.got.length >= 2, null, { timeout: 10000 });
    assert.deepEqual(await page.evaluate(() => window.got), [{ text: `hello ${name}` }, "plain ✓"]);
    const type = await page.evaluate(() => window.client._dispatcher._transport.connectionType);
    assert.ok(types.includes(type), type);
    assert.deepEqual(errors, []);
    await page.close();
  });
}
