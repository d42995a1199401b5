#!/usr/bin/env bash
# Exactly what CI runs: formatting, lints, then every test (unit and
# end-to-end against the real binary). Run from anywhere.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --locked -- -D warnings

echo "== cargo test"
# Benchmarks are built (and linted) above but run only on request.
cargo test --locked --lib --bins --tests
