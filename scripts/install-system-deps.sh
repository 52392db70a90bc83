#!/usr/bin/env bash
# System packages the test suite needs beyond Python: a real PostgreSQL server (store tests)
# and headless Chromium (the HTML evidence report is rendered in a real browser).
# Installs them with apt when missing and we are root; otherwise says what is missing, and the
# tests that need them fail with that message (they are never skipped silently).
set -euo pipefail
need=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || need+=(chromium)
if [ ${#need[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing system packages: ${need[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    # The package's own cluster is not used (tests start their own); keep it from holding 5432.
    if command -v pg_ctlcluster >/dev/null 2>&1; then
        for cluster in /etc/postgresql/*/main; do
            [ -d "$cluster" ] || continue
            version=$(basename "$(dirname "$cluster")")
            pg_ctlcluster "$version" main stop >/dev/null 2>&1 || true
        done
    fi
else
    echo "warning: missing system packages: ${need[*]} (install them; the tests that need them will fail)" >&2
fi
