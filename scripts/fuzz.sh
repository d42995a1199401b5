#!/usr/bin/env bash
# Longer randomized runs than CI does: the SIGKILL durability test with
# many rounds and a fresh seed each time, a million mutated hostile requests
# through framing, routing and input decoding, and the seeded unit tests of
# the HTTP parser and WAL recovery.
#
#   scripts/fuzz.sh [kill rounds, default 200] [seed, default: random]
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${1:-200}"
SEED="${2:-$(od -An -N8 -tu8 /dev/urandom | tr -d ' ')}"
echo "kill test: $ROUNDS rounds, seed $SEED (rerun with: scripts/fuzz.sh $ROUNDS $SEED)"
PROGRESSDB_KILL_ROUNDS="$ROUNDS" PROGRESSDB_KILL_SEED="$SEED" \
  cargo test --release --locked --test durability acknowledged_messages_survive_sigkill -- --nocapture 2>&1 \
  | grep -v '^\[server\]'
echo "request decoding: 1,000,000 hostile requests"
PROGRESSDB_FUZZ_CASES=1000000 cargo test --release --locked --lib -- hostile_requests_never_panic
cargo test --release --locked --lib -- randomized recovery_after_random_crashes
