#!/usr/bin/env bash
# Builds the dashboard's third-party assets from the npm registry (run by `make install` and
# `make install-test`): `npm ci` installs the versions locked in
# src/vimha/api/ui/package-lock.json (integrity-checked, no install scripts) and the few
# files the pages load (htmx, its SSE extension, Chart.js for the charts) are copied into
# src/vimha/api/ui/static/vendor/, which git ignores.
# The controller serves them itself: nothing is fetched from the internet at run time.
set -euo pipefail
ui="$(cd "$(dirname "$0")/.." && pwd)/src/vimha/api/ui"
vendor="$ui/static/vendor"
files=(
    "htmx.org/dist/htmx.min.js:htmx.min.js"
    "htmx-ext-sse/dist/sse.min.js:htmx-sse.min.js"
    "chart.js/dist/chart.umd.min.js:chart.umd.min.js"
)
stamp="$vendor/.lock-sha256"
want="$(sha256sum "$ui/package-lock.json" | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
    echo "build-ui-assets: npm is missing (Debian: apt-get install npm)" >&2
    exit 1
fi
npm ci --prefix "$ui" --no-audit --no-fund --ignore-scripts --loglevel=error >/dev/null
mkdir -p "$vendor"
for pair in "${files[@]}"; do
    cp "$ui/node_modules/${pair%%:*}" "$vendor/${pair##*:}"
done
for licence in htmx.org htmx-ext-sse chart.js; do
    for name in LICENSE LICENSE.md; do
        cp "$ui/node_modules/$licence/$name" "$vendor/LICENSE.$licence" 2>/dev/null || true
    done
done
echo "$want" > "$stamp"
echo "build-ui-assets: $(ls "$vendor" | grep -c js) assets in $vendor"
