// cometbox.js stays small: under 4 KiB minified and gzipped (terser, gzip -9).
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { test } from "node:test";
import { gzipSync } from "node:zlib";
import { ROOT } from "./harness.mjs";

const require = createRequire(path.join(ROOT, "tests/node/package.json"));

test("cometbox.js is under 4 KiB minified and gzipped", async () => {
  const { minify } = require("terser");
  const source = readFileSync(path.join(ROOT, "client/cometbox.js"), "utf8");
  const { code } = await minify(source, { compress: true, mangle: true });
  // The minified form still runs: it defines the same global.
  const cometbox = new Function(code + "; return cometbox;")();
  assert.equal(typeof cometbox.subscribe, "function");
  const gzipped = gzipSync(code, { level: 9 }).length;
  console.log(`cometbox.js: ${source.length} bytes, ${code.length} minified, ${gzipped} minified+gzipped`);
  assert.ok(gzipped < 4096, `${gzipped} bytes minified+gzipped`);
});
