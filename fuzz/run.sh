#!/usr/bin/env bash
# Runs every fuzz target for a bounded time (default 60 s each). Not part of
# CI: fuzzing reports, tests assert. A crash leaves its input in
# fuzz/artifacts/TARGET/; turn it into a regression test next to the code.
# Needs cargo-fuzz (`cargo install cargo-fuzz`); RUSTC_BOOTSTRAP lets the
# stable toolchain build with the sanitizer flags cargo-fuzz passes.
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-60}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
for target in http_request resp_decoder config_parse ws_frames jwt_claims store_record; do
    mkdir -p "corpus/$target"
    echo "== $target for ${seconds}s"
    cargo fuzz run "$target" "corpus/$target" -- -max_total_time="$seconds" -rss_limit_mb=2048 2>&1 \
        | grep -E "^(#[0-9]+ +DONE|==[0-9]+==|SUMMARY|Done)" || true
done
