// What is built from client/cometbox.js and shipped: the committed minified
// files match a fresh build (the gateway embeds cometbox.min.js), stay small,
// still run; the npm package in client/ resolves and its types check.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { test } from "node:test";
import { pathToFileURL } from "node:url";
import { gzipSync } from "node:zlib";
import { minified, moduleForm } from "../../client/minify.mjs";
import { ROOT } from "./harness.mjs";

const require = createRequire(path.join(ROOT, "tests/node/package.json"));
const client = (name) => readFileSync(path.join(ROOT, "client", name), "utf8");
const STALE = "is stale: run client/build.sh and commit the result";

test("the committed cometbox.min.js, .mjs and .min.mjs are a fresh build of cometbox.js", async () => {
  const min = await minified();
  assert.ok(client("cometbox.min.js") === min, `client/cometbox.min.js ${STALE}`);
  assert.ok(client("cometbox.mjs") === moduleForm(), `client/cometbox.mjs ${STALE}`);
  assert.ok(client("cometbox.min.mjs") === moduleForm(min), `client/cometbox.min.mjs ${STALE}`);
});

test("cometbox.min.js is under 4 KiB gzipped and still defines the client", () => {
  const source = client("cometbox.js");
  const min = client("cometbox.min.js");
  // The minified form still runs: it defines the same global.
  const cometbox = new Function(min + "; return cometbox;")();
  assert.equal(typeof cometbox.subscribe, "function");
  const gzipped = gzipSync(min, { level: 9 }).length;
  console.log(`cometbox.js: ${source.length} bytes, ${min.length} minified, ${gzipped} minified+gzipped`);
  assert.ok(gzipped < 4096, `${gzipped} bytes minified+gzipped`);
});

test("client/package.json: version of Cargo.toml, every entry point shipped", () => {
  const pkg = JSON.parse(client("package.json"));
  const cargo = readFileSync(path.join(ROOT, "Cargo.toml"), "utf8");
  const [, version] = cargo.match(/^\[package\][^[]*?^version = "([^"]+)"/ms);
  assert.equal(pkg.name, "cometbox");
  assert.equal(pkg.version, version, "client/package.json and Cargo.toml disagree on the version");
  for (const entry of [pkg.main, pkg.module, pkg.types]) {
    assert.ok(pkg.files.includes(entry.replace(/^\.\//, "")), `${entry} is not in "files"`);
  }
  // What `npm pack` would put in the tarball: the files list and nothing else.
  const [packed] = JSON.parse(
    execFileSync("npm", ["pack", "--dry-run", "--json", "--loglevel=error"], { cwd: path.join(ROOT, "client") }),
  );
  assert.deepEqual(packed.files.map((f) => f.path).sort(), [...pkg.files, "package.json"].sort());
});

test("the npm package resolves: import cometbox, { subscribe } from \"cometbox\"", async () => {
  const url = pathToFileURL(require.resolve("cometbox")).href; // tests/node depends on file:../../client
  const mod = await import(url);
  assert.equal(typeof mod.subscribe, "function");
  assert.equal(mod.default.subscribe, mod.subscribe);
  const min = await import(pathToFileURL(require.resolve("cometbox/cometbox.min.mjs")).href);
  assert.equal(typeof min.subscribe, "function");
});

test("cometbox.d.ts types the examples (tsc --noEmit on tests/node/types)", () => {
  const tsc = path.join(ROOT, "tests/node/node_modules/.bin/tsc");
  try {
    execFileSync(tsc, ["--noEmit", "-p", path.join(ROOT, "tests/node/types")], { encoding: "utf8" });
  } catch (e) {
    assert.fail(`tsc found type errors:\n${e.stdout}${e.stderr}`);
  }
});
