// Makes docs/chat-demo.png: the chat demo with a short conversation, as a
// person sees it. Run by hand after changing the page:
//   node tests/e2e/screenshot.mjs
import path from "node:path";
import { cleanup, launchBrowser, openChat, publisher, ROOT, sleep, startChat, startGateway } from "./harness.mjs";

const gw = await startGateway({ conf: 'mailbox.cors-origins = ( "*" )' });
const chat = await startChat(gw);
const browser = await launchBrowser();
const page = await openChat(browser, chat, { room: "launch-day", name: "Maya" });
await page.setViewportSize({ width: 1100, height: 720 });
const pub = await publisher(gw);
const start = Date.now() - 6 * 60_000;
const conversation = [
  ["Daniel", "Deploy of 2.4 is out on the canaries."],
  ["Maya", "Nice! Dashboards look calm so far."],
  ["Priya", "Error rate 0.02%, same as before. p99 latency dropped from 180 to 120 ms."],
  ["Daniel", "That's the new cache. Rolling out to the rest in 10 minutes unless someone shouts."],
  ["Sam", "Support queue is quiet. The release notes are live on the blog."],
  ["Maya", "Ship it!"],
];
for (const [i, [name, text]] of conversation.entries()) {
  await pub.publish("room:launch-day", JSON.stringify({ name, text, at: start + i * 70_000 }));
}
await page.waitForFunction((n) => window.chat.lines.length === n, conversation.length);
await page.fill("#text", "Starting the rollout now");
await sleep(200);
const file = path.join(ROOT, "docs/chat-demo.png");
await page.screenshot({ path: file });
console.log(`wrote ${file}`);
await cleanup();
