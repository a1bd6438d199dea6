// What the browser tests share: the real gateway binary, the real chat app,
// Debian's Chromium driven by playwright-core, and a node-redis publisher.
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const require = createRequire(path.join(ROOT, "tests/node/package.json"));
const BIN = process.env.COMETBOX_BIN || path.join(ROOT, "target/release/cometbox");
const PYTHON = existsSync(path.join(ROOT, ".venv/bin/python")) ? path.join(ROOT, ".venv/bin/python") : "python3";
const CHROMIUM = "/usr/bin/chromium";

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

// Resolves with the first match of `pattern` in the child's stderr.
function waitFor(child, pattern, what) {
  return new Promise((resolve, reject) => {
    let seen = "";
    const timer = setTimeout(() => reject(new Error(`${what} did not start:\n${seen}`)), 20000);
    child.stderr.on("data", (chunk) => {
      seen += chunk;
      const m = seen.match(pattern);
      if (m) {
        clearTimeout(timer);
        resolve(m);
      }
    });
    child.on("exit", (code) => reject(new Error(`${what} exited ${code}:\n${seen}`)));
  });
}

const cleanups = [];
export async function cleanup() {
  while (cleanups.length) await cleanups.pop()();
}

/// The gateway on `port` (0 = any) with `conf` appended to a test config.
/// Starting again with the same `dir` and port is a restart.
export async function startGateway({ port = 0, conf = "", dir } = {}) {
  if (!existsSync(BIN)) throw new Error(`${BIN} is missing: cargo build --release (tests/run-all.sh does)`);
  dir ??= mkdtempSync(path.join(tmpdir(), "cometbox-e2e-"));
  const socket = path.join(dir, "backend.sock");
  const file = path.join(dir, "gateway.conf");
  writeFileSync(
    file,
    `server.bind = "127.0.0.1"\nserver.port = ${port}\nserver.workers = 2\n` +
      `mailbox.backend-socket = "${socket}"\n${conf}\n`,
  );
  const proc = spawn(BIN, ["-c", file], { env: { ...process.env, RUST_LOG: "info" }, stdio: ["ignore", "ignore", "pipe"] });
  const [, addr] = await waitFor(proc, /listening for HTTP on (\S+)/, "gateway");
  const gw = {
    dir,
    socket,
    port: Number(addr.split(":").pop()),
    url: `http://${addr}`,
    proc,
    exited: new Promise((r) => proc.on("exit", r)),
    async kill(signal = "SIGTERM") {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
      await gw.exited;
    },
  };
  cleanups.push(() => gw.kill());
  return gw;
}

export function removeLater(dir) {
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
}

/// The chat demo app (backend-examples/chat/app.py) for a gateway.
export async function startChat(gw, { env = {}, port = 0 } = {}) {
  const proc = spawn(
    PYTHON,
    [path.join(ROOT, "backend-examples/chat/app.py"), "--port", String(port), "--gateway", gw.url, "--socket", gw.socket],
    { env: { ...process.env, CHAT_QUIET: "1", ...env }, stdio: ["ignore", "ignore", "pipe"] },
  );
  const [, url] = await waitFor(proc, /chat app on (\S+)/, "chat app");
  cleanups.push(() => new Promise((r) => (proc.exitCode !== null ? r() : (proc.on("exit", r), proc.kill()))));
  return { url, proc };
}

export async function launchBrowser() {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: apt-get install chromium chromium-driver (tests/run-all.sh does)`);
  const { chromium } = require("playwright-core");
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
  cleanups.push(() => browser.close());
  return browser;
}

export async function publisher(gw) {
  const { createClient } = require("redis");
  const client = createClient({ socket: { path: gw.socket, reconnectStrategy: false } });
  client.on("error", () => {}); // a killed gateway is part of some tests
  await client.connect();
  cleanups.push(() => client.quit().catch(() => {}));
  return client;
}

/// A chat page in `room`, once its subscription is open.
export async function openChat(browser, chat, { room, transport = "auto", name = "tester" }) {
  const page = await browser.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(e));
  const q = new URLSearchParams({ room, transport, name });
  await page.goto(`${chat.url}/?${q}`);
  await page.waitForFunction(() => window.chat && window.chat.status === "open", null, { timeout: 10000 });
  page.errors = errors;
  return page;
}

export const lines = (page) => page.evaluate(() => window.chat.lines.map((l) => l.text));
