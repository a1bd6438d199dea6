// Mint a subscriber token (a JWT) with jsonwebtoken, as the app does per page view.
//
//   COMETBOX_JWT_SECRET_FILE=/etc/cometbox/jwt-secret node mint-token.mjs MAILBOX...
//
// HS256 with the secret the gateway reads from auth.jwt-secret-file.
// TOKEN_TTL sets the lifetime in seconds (default 3600). A name ending in '*'
// grants a prefix ("room:*").
import { readFileSync } from "node:fs";
import jwt from "jsonwebtoken";

const mailboxes = process.argv.slice(2);
const secretFile = process.env.COMETBOX_JWT_SECRET_FILE;
if (!mailboxes.length || !secretFile) {
  console.error("usage: COMETBOX_JWT_SECRET_FILE=FILE node mint-token.mjs MAILBOX...");
  process.exit(2);
}
const secret = readFileSync(secretFile, "utf8").trim();
const ttl = Number(process.env.TOKEN_TTL || 3600);
const now = Math.floor(Date.now() / 1000);
console.log(jwt.sign({ mailboxes, nbf: now - 5 }, secret, { algorithm: "HS256", expiresIn: ttl }));
