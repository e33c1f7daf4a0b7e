#!/usr/bin/env bash
# Builds the dashboard's assets into web/dist/, which `cloudlake serve` embeds at compile time.
# Chart.js comes from npm (pinned in package-lock.json); dist/ is committed so a Rust build
# never needs Node. Re-run after changing src/ or the Chart.js version.
set -euo pipefail
cd "$(dirname "$0")"
npm ci --no-audit --no-fund --silent
mkdir -p dist
cp node_modules/chart.js/dist/chart.umd.min.js dist/chart.umd.min.js
cp node_modules/chart.js/LICENSE.md dist/chart.js.LICENSE.md
cp src/index.html src/app.js src/style.css dist/
echo "web/dist: $(ls dist | tr '\n' ' ')"
