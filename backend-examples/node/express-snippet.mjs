// What an Express app adds to push live updates through cometbox. Not run
// by the tests (no Express here): the same calls as publish.mjs and
// mint-token.mjs, in the shape a Node developer pastes.
import express from "express";
import jwt from "jsonwebtoken";
import { readFileSync } from "node:fs";
import { connect } from "./cometbox-client.mjs";

const cometbox = await connect(); // once, at startup
const secret = readFileSync(process.env.COMETBOX_JWT_SECRET_FILE, "utf8").trim();
const app = express();

app.post("/orders/:id/ship", async (req, res) => {
  const order = await shipOrder(req.params.id, req.user);
  await cometbox.publish(`user:${order.userId}`, JSON.stringify({ type: "order.shipped", order: order.id }));
  res.sendStatus(204);
});

// The page asks for a fresh token before each (re)connect: cometbox.js takes
// `token: () => fetch("/cometbox-token").then((r) => r.text())`.
app.get("/cometbox-token", (req, res) => {
  res.type("text/plain").send(jwt.sign({ mailboxes: [`user:${req.user.id}`] }, secret, { algorithm: "HS256", expiresIn: 3600 }));
});
