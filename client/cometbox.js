// cometbox.js: placeholder until the browser client lands (see docs/protocol.md).
