// Ask the gateway about mailboxes with the clients' generic command calls.
//
//   node inspect-mailboxes.mjs [--ioredis] numsub MAILBOX...
//   node inspect-mailboxes.mjs [--ioredis] channels [PATTERN]
//   node inspect-mailboxes.mjs [--ioredis] del MAILBOX...
//   node inspect-mailboxes.mjs [--ioredis] info [SECTION]
//
// Prints the reply as JSON. Socket: COMETBOX_SOCKET (default /tmp/cometbox.sock).
import { command, connect } from "./cometbox-client.mjs";

const args = process.argv.slice(2);
const useIoredis = args[0] === "--ioredis";
if (useIoredis) args.shift();
const commands = { numsub: ["PUBSUB", "NUMSUB"], channels: ["PUBSUB", "CHANNELS"], del: ["DEL"], info: ["INFO"] };
const [what, ...rest] = args;
if (!commands[what]) {
  console.error("usage: node inspect-mailboxes.mjs [--ioredis] numsub|channels|del|info [ARGS...]");
  process.exit(2);
}

const client = await connect(useIoredis);
let reply = await command(client, [...commands[what], ...rest]);
if (what === "numsub") {
  const pairs = {};
  for (let i = 0; i < reply.length; i += 2) pairs[String(reply[i])] = Number(reply[i + 1]);
  reply = pairs;
} else if (what === "channels") {
  reply = reply.map(String).sort();
} else if (what === "info") {
  // INFO is text in "# Section" / "key:value" lines.
  reply = Object.fromEntries(
    String(reply).split(/\r?\n/).filter((l) => l && !l.startsWith("#")).map((l) => l.split(/:(.*)/s).slice(0, 2)),
  );
}
console.log(JSON.stringify(reply));
await client.quit();
