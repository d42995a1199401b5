#!/usr/bin/env bash
# Installs what the browser test (src/tests/viewer.rs) needs: Debian's
# chromium and chromium-driver, and playwright-core from the committed
# lockfile; what the SQL test (src/tests/pg.rs) needs: Debian's
# postgresql-client, psycopg pinned in src/tests/pg/requirements.txt, a
# JDK and pgjdbc; what the S3 backup test (src/tests/backup.rs) needs:
# moto's S3 server pinned in src/tests/s3/requirements.txt; and the
# published Python SDK that src/tests/sdk.rs and src/tests/tls.rs drive;
# the pinned nats-server the cluster test (src/tests/cluster.rs) runs; and
# Redis, the baseline the load harness's xadd test (src/tests/loadgen.rs)
# appends to.
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
# pgjdbc, compiled against and run by the JDBC case of src/tests/pg.rs.
if command -v javac >/dev/null && [ -f /usr/share/java/postgresql.jar ]; then
    echo "== javac, pgjdbc: already installed"
else
    echo "== javac, pgjdbc: installing"
    as_root apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
        default-jdk-headless libpostgresql-jdbc-java
fi
# redis-server and redis-cli: the load harness's xadd baseline is tested
# against a real Redis (src/tests/loadgen.rs).
if command -v redis-server >/dev/null && command -v redis-cli >/dev/null; then
    echo "== redis: already installed ($(redis-server --version | cut -d' ' -f3))"
else
    echo "== redis: installing"
    as_root apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q redis-server redis-tools
fi
if ! command -v python3 >/dev/null || ! python3 -m pip --version >/dev/null 2>&1; then
    echo "== python3, pip: installing"
    as_root apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3 python3-pip
fi
# Installs the pinned requirements.txt of a test directory into its site/
# (put on PYTHONPATH by the test). As with playwright above, the copy of
# the requirements next to the installed tree says whether it is current.
# --target leaves the system's Python untouched, which is what Debian's
# "externally managed" guard protects; older pips ignore the variable.
pip_site() { # directory, what it holds
    local dir="$1" what="$2"
    if cmp -s "$dir/requirements.txt" "$dir/site/.requirements.installed" 2>/dev/null; then
        echo "== $what: already installed"
        return
    fi
    echo "== $what: pip install --target $dir/site"
    rm -rf "$dir/site"
    PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install -q --no-warn-script-location \
        --target "$dir/site" -r "$dir/requirements.txt"
    cp "$dir/requirements.txt" "$dir/site/.requirements.installed"
}
pip_site src/tests/pg psycopg
# The S3 backup test runs moto's S3 server (PyPI) on loopback.
pip_site src/tests/s3 moto
# The SDK and TLS tests drive the published Python SDK (PyPI); the TLS
# test makes its certificates with the openssl command.
pip_site src/tests/sdk "progressdb (PyPI SDK)"
if ! command -v openssl >/dev/null; then
    echo "== openssl: installing"
    as_root apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q openssl
fi

# The cluster tests (src/tests/cluster.rs) start real nats-servers.
scripts/install-nats.sh
