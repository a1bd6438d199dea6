// The one place that knows how each Node client reaches the gateway's Unix
// socket. An app does this once at startup and shares the client.
import { createClient } from "redis";
import IORedis from "ioredis";

export const SOCKET = process.env.COMETBOX_SOCKET || "/tmp/cometbox.sock";

export async function connect(useIoredis = false) {
  if (useIoredis) {
    // ioredis connects on its own and queues commands until it is ready.
    return new IORedis({ path: SOCKET });
  }
  // node-redis: RESP3 is what a current app would choose; RESP2 works too.
  const client = createClient({ socket: { path: SOCKET }, RESP: 3 });
  client.on("error", (err) => console.error("cometbox:", err.message));
  await client.connect();
  return client;
}

// The generic command call: node-redis sendCommand, ioredis call.
export function command(client, args) {
  return client instanceof IORedis ? client.call(...args) : client.sendCommand(args);
}
