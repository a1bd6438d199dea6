// What an Express app adds to push live updates through cometbox. Not run
// by the tests (it needs an Express app): the same calls as publish.mjs and
// mint-token.mjs, in the shape a Node developer pastes.
import express from "express";
import jwt from "jsonwebtoken";
import { readFileSync } from "node:fs";
import { createClient } from "redis";

// Once, at startup. The app must start and serve even while the gateway is
// down: node-redis reconnects on its own, and `disableOfflineQueue` makes a
// publish while disconnected fail at once instead of queueing until the
// gateway is back (a live update delivered minutes late is worse than none).
const cometbox = createClient({
  socket: { path: process.env.COMETBOX_SOCKET || "/run/cometbox/cometbox.sock", connectTimeout: 500 },
  RESP: 3,
  disableOfflineQueue: true,
});
let down = false;
cometbox.on("error", (err) => {
  if (!down) console.warn(`cometbox unreachable (${err.message}); reconnecting`); // once, not every retry
  down = true;
});
cometbox.on("ready", () => (down = false));
cometbox.connect().catch(() => {}); // do not hold up start-up

// A live update is a courtesy: the order is shipped whether or not a browser
// hears of it now (a page that reconnects reloads its state). So a gateway
// that is down, or refuses the message, is logged and the request carries on.
async function notify(mailbox, event) {
  try {
    return await cometbox.publish(mailbox, JSON.stringify(event));
  } catch (err) {
    console.warn(`cometbox: ${mailbox} not told: ${err.message}`);
    return null;
  }
}

const secret = readFileSync(process.env.COMETBOX_JWT_SECRET_FILE, "utf8").trim();
const app = express();

app.post("/orders/:id/ship", async (req, res) => {
  // shipOrder commits its transaction before it returns: publish after the
  // commit, so a browser that reloads on the message finds the order shipped.
  const order = await shipOrder(req.params.id, req.user);
  await notify(`user:${order.userId}`, { type: "order.shipped", order: order.id });
  res.sendStatus(204);
});

// The page asks for a fresh token before each (re)connect: cometbox.js takes
// `token: () => fetch("/cometbox-token").then((r) => r.text())`.
app.get("/cometbox-token", (req, res) => {
  res.type("text/plain").send(jwt.sign({ mailboxes: [`user:${req.user.id}`] }, secret, { algorithm: "HS256", expiresIn: 3600 }));
});
