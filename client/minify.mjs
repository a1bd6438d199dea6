// Builds what the gateway and npm ship from client/cometbox.js, the one
// source: cometbox.min.js (terser), cometbox.mjs (the ES module form: the
// source plus its exports) and cometbox.min.mjs (the minified module form).
//
//   node client/minify.mjs           writes the three (client/build.sh runs this)
//
// tests/e2e/client-build.test.mjs builds them again in memory and fails when
// the committed files differ, so they cannot go stale.
import { readFileSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

const HERE = path.dirname(fileURLToPath(import.meta.url));
// terser is installed with the test packages (npm ci --prefix tests/node).
const require = createRequire(path.join(HERE, "../tests/node/package.json"));

// Keeps the /*! licence comment (terser's default); names mangled.
export const TERSER_OPTIONS = { compress: true, mangle: true };
export const MODULE_EXPORTS = "export default cometbox;\nexport const subscribe = cometbox.subscribe;\n";

export function source() {
  return readFileSync(path.join(HERE, "cometbox.js"), "utf8");
}

export async function minified(text = source()) {
  const { minify } = require("terser");
  const { code } = await minify(text, TERSER_OPTIONS);
  return code + "\n";
}

export function moduleForm(text = source()) {
  return text + MODULE_EXPORTS;
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const min = await minified();
  writeFileSync(path.join(HERE, "cometbox.min.js"), min);
  writeFileSync(path.join(HERE, "cometbox.mjs"), moduleForm());
  writeFileSync(path.join(HERE, "cometbox.min.mjs"), moduleForm(min));
}
