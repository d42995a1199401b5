#!/usr/bin/env bash
# Installs what the browser test (src/tests/viewer.rs) needs: Debian's
# chromium and chromium-driver, and playwright-core from the committed
# lockfile. Idempotent, and quick when everything is already there.
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
