#!/usr/bin/env bash
# Exactly what CI runs: formatting, lints, then every test (unit and
# end-to-end against the real binary). Run from anywhere.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --locked -- -D warnings

echo "== test dependencies (browser, psql, psycopg, pgjdbc, moto, Python SDK, nats-server)"
scripts/install-test-deps.sh

echo "== cargo test"
# Benchmarks are built (and linted) above but run only on request. The
# doc tests are the README's embedded-mode example.
cargo test --locked --lib --bins --tests
cargo test --locked --doc
