// An app that vendors the client with npm and imports the module form.
import cometbox, { subscribe, type CometboxError, type Status, type Subscription } from "cometbox";

interface Chat {
  name: string;
  text: string;
}

const sub: Subscription = subscribe<Chat>("/mailbox/room:lobby", {
  json: true,
  baseUrl: "https://push.example.com",
  transport: "websocket",
  token: () => fetch("/cometbox-token").then((r) => r.text()),
  params: { v: "2" },
  since: localStorage.getItem("cursor") ?? undefined,
  onMessage(data, id) {
    if (data instanceof Uint8Array) return; // a binary payload stays bytes
    const line: string = `${data.name}: ${data.text}`;
    console.log(line, id);
  },
  onMissed() {
    location.reload();
  },
  onError(err: CometboxError) {
    if (err.fatal) console.error(err.transport, err.status, err.message);
  },
  onStatus(state: Status, transport) {
    document.title = `${state} ${transport ?? ""}`;
  },
});
const cursor: string | null = sub.cursor;
if (cursor) localStorage.setItem("cursor", cursor);
sub.close();

// Without json, payloads are text or bytes.
cometbox.subscribe("/mailbox/user:42", {
  onMessage(data) {
    const text: string = typeof data == "string" ? data : new TextDecoder().decode(data);
    console.log(text, cometbox.version);
  },
});

// What the types catch:
// @ts-expect-error: no such transport
subscribe("/mailbox/a", { transport: "carrier-pigeon" });
subscribe("/mailbox/a", {
  // @ts-expect-error: without json: true, data is string | Uint8Array
  onMessage(data: { text: string }) {},
});
// @ts-expect-error: cursor is read-only
sub.cursor = "x";

// Several mailboxes on one connection: messages name their mailbox.
const several: Subscription = subscribe<Chat>(["user:alice", "room:42", "ticker"], {
  json: true,
  onMessage(data, id, mailbox) {
    const from: string | undefined = mailbox;
    console.log(from, id, data);
  },
  onMissed(mailbox) {
    console.log("reload", mailbox);
  },
});
several.close();
