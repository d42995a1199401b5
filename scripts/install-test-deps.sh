#!/usr/bin/env bash
# Installs what the browser test (src/tests/viewer.rs) needs: Debian's
# chromium and chromium-driver, and playwright-core from the committed
# lockfile; and what the SQL test (src/tests/pg.rs) needs: Debian's
# postgresql-client and psycopg pinned in src/tests/pg/requirements.txt;
# and the pinned nats-server the cluster test (src/tests/cluster.rs) runs.
# Idempotent, and quick when everything is already there. Runs as root on
# a fresh Debian machine (or with sudo).
set -euo pipefail
cd "$(dirname "$0")/.."

# Root needs no sudo (containers often have none); anyone else does.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
    echo "== chromium: already installed ($(/usr/bin/chromium --version 2>/dev/null || echo unknown))"
else
    echo "== chromium: installing"
    as_root apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver
fi

# node runs the test script, which posts its live message with curl.
if ! command -v node >/dev/null || ! command -v npm >/dev/null || ! command -v curl >/dev/null; then
    echo "== node, npm, curl: installing"
    as_root apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q nodejs npm curl
fi

browser_dir=src/tests/browser
# package-lock.json is copied into node_modules by npm; when it still
# matches, the installed tree is the locked one and npm need not run.
if cmp -s "$browser_dir/package-lock.json" "$browser_dir/node_modules/.package-lock.json.installed" 2>/dev/null; then
    echo "== playwright-core: already installed"
else
    echo "== playwright-core: npm ci"
    (cd "$browser_dir" && npm ci --no-audit --no-fund --loglevel=error)
    cp "$browser_dir/package-lock.json" "$browser_dir/node_modules/.package-lock.json.installed"
fi

# The SQL test (src/tests/pg.rs) drives Debian's psql and psycopg (PyPI),
# which loads the system libpq that postgresql-client brings.
# grep reads all of ldconfig's output (no -q): an early exit would be a
# SIGPIPE, which pipefail turns into "missing".
if command -v psql >/dev/null && ldconfig -p | grep 'libpq\.so\.5' >/dev/null; then
    echo "== psql: already installed ($(psql --version))"
else
    echo "== psql, libpq: installing"
    as_root apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql-client
fi
if ! command -v python3 >/dev/null || ! python3 -m pip --version >/dev/null 2>&1; then
    echo "== python3, pip: installing"
    as_root apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3 python3-pip
fi
pg_dir=src/tests/pg
# As with playwright above: the requirements copied next to the installed
# tree say whether it is the pinned one.
if cmp -s "$pg_dir/requirements.txt" "$pg_dir/site/.requirements.installed" 2>/dev/null; then
    echo "== psycopg: already installed"
else
    echo "== psycopg: pip install --target $pg_dir/site"
    rm -rf "$pg_dir/site"
    # --target leaves the system's Python untouched, which is what Debian's
    # "externally managed" guard protects; older pips ignore the variable.
    PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install -q --no-warn-script-location \
        --target "$pg_dir/site" -r "$pg_dir/requirements.txt"
    cp "$pg_dir/requirements.txt" "$pg_dir/site/.requirements.installed"
fi

# The cluster tests (src/tests/cluster.rs) start real nats-servers.
scripts/install-nats.sh
