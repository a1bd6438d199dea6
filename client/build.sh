#!/usr/bin/env bash
# Rebuilds client/cometbox.min.js, cometbox.mjs and cometbox.min.mjs from
# client/cometbox.js. Run it after changing cometbox.js and commit the
# results: the gateway embeds cometbox.min.js, and a test fails while the
# committed files differ from a fresh build.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d tests/node/node_modules/terser ] ||
    npm ci --prefix tests/node --no-audit --no-fund --loglevel=error
node client/minify.mjs
# The size a browser downloads, measured as the test measures it (zlib, level 9).
# shellcheck disable=SC2016 # JavaScript, not shell
node -e 'const fs = require("fs"), zlib = require("zlib");
  const min = fs.readFileSync("client/cometbox.min.js");
  console.log(`client/cometbox.min.js: ${min.length} bytes, ${zlib.gzipSync(min, { level: 9 }).length} gzipped`);'
