// cometbox.js subscribe([...]) in headless Chromium: one connection follows
// three mailboxes on each transport; every message arrives once, naming its
// mailbox; the cursor is composite; a DEL is reported missed for that
// mailbox alone; and a resume with the composite cursor loses nothing.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { cleanup, launchBrowser, publisher, startGateway } from "./harness.mjs";

let browser, gw, pub;
before(async () => {
  browser = await launchBrowser();
  gw = await startGateway({ conf: "mailbox.poll-timeout = 5" });
  pub = await publisher(gw);
});
after(cleanup);

async function open(transport, names, since) {
  const page = await browser.newPage();
  // Same origin as the gateway: a page served by it (its 404 is a page too).
  await page.goto(`${gw.url}/blank`);
  await page.addScriptTag({ url: `${gw.url}/cometbox.js` });
  await page.evaluate(
    ({ transport, names, since }) => {
      window.got = [];
      window.missed = [];
      window.sub = cometbox.subscribe(names, {
        transport,
        since,
        onMessage: (data, id, mailbox) => window.got.push([mailbox, data]),
        onMissed: (mailbox) => window.missed.push(mailbox),
        onStatus: (s) => (window.status = s),
      });
    },
    { transport, names, since },
  );
  await page.waitForFunction(() => window.status === "open", null, { timeout: 10000 });
  return page;
}

for (const transport of ["sse", "websocket", "longpoll"]) {
  test(`subscribe([a, b, c]) over ${transport}: once each, missed per mailbox, resume`, async () => {
    const names = ["a", "b", "c"].map((n) => `${transport}:${n}`);
    const page = await open(transport, names);
    await new Promise((r) => setTimeout(r, 600)); // a held long-poll is registered
    for (let round = 1; round <= 3; round++) {
      for (const name of names) await pub.publish(name, `${name}#${round}`);
    }
    await page.waitForFunction(() => window.got.length >= 9, null, { timeout: 5000 });
    const got = await page.evaluate(() => window.got);
    for (const name of names) {
      assert.deepEqual(
        got.filter(([m]) => m === name).map(([, d]) => d),
        [1, 2, 3].map((r) => `${name}#${r}`),
        `${name}: exactly once, in order`,
      );
    }
    const cursor = await page.evaluate(() => window.sub.cursor);
    assert.equal(cursor.split(",").length, 3, `a composite cursor: ${cursor}`);

    await pub.sendCommand(["DEL", names[1]]);
    await pub.publish(names[1], "after-del");
    await page.waitForFunction(() => window.missed.length >= 1 && window.got.length >= 10, null, { timeout: 5000 });
    assert.deepEqual(await page.evaluate(() => window.missed), [names[1]]);

    // Closed, then resumed from the composite cursor: only what came since.
    const resumeFrom = await page.evaluate(() => (window.sub.close(), window.sub.cursor));
    await page.close();
    await pub.publish(names[2], "while-away");
    const again = await open(transport, names, resumeFrom);
    await again.waitForFunction(() => window.got.length >= 1, null, { timeout: 5000 });
    await new Promise((r) => setTimeout(r, 300));
    assert.deepEqual(await again.evaluate(() => window.got), [[names[2], "while-away"]]);
    await again.close();
  });
}
