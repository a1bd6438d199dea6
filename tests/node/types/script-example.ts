// A page that loads <script src="/cometbox.js">: the global `cometbox`.
/// <reference types="cometbox" />

const live = cometbox.subscribe("/mailbox/user:alice", {
  json: true,
  maxDelay: 10000,
  pollTimeout: 30,
  withCredentials: true,
  onMessage(data: unknown, id: string) {
    console.log(data, id);
  },
});
const transport: cometbox.ActiveTransport | null = live.transport;
console.log(transport);
