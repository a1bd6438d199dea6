// Publish one message to a cometbox mailbox with node-redis (or ioredis).
//
//   node publish.mjs [--ioredis] MAILBOX [PAYLOAD]   # PAYLOAD omitted: read stdin
//
// Prints how many waiting subscribers the gateway handed the message to.
// Socket: COMETBOX_SOCKET (default /tmp/cometbox.sock).
import { connect } from "./cometbox-client.mjs";

const args = process.argv.slice(2);
const useIoredis = args[0] === "--ioredis";
if (useIoredis) args.shift();
if (args.length < 1 || args.length > 2) {
  console.error("usage: node publish.mjs [--ioredis] MAILBOX [PAYLOAD]");
  process.exit(2);
}
const [mailbox] = args;
let payload = args[1];
if (payload === undefined) {
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  payload = Buffer.concat(chunks); // bytes, exactly as read
}

const client = await connect(useIoredis);
console.log(await client.publish(mailbox, payload));
await client.quit();
