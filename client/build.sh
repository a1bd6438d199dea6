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
gzip -9 <client/cometbox.min.js | wc -c | xargs printf 'client/cometbox.min.js: %s bytes gzipped\n'
