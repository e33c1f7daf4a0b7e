#!/usr/bin/env bash
# Puts the npm-built part of the dashboard, Chart.js (pinned in package-lock.json), in web/dist/.
# `cloudlake serve` embeds it at compile time together with web/src/ (our own page, script and
# style, used as written). dist/ is committed so a Rust build never needs Node; re-run after
# changing the Chart.js version.
set -euo pipefail
cd "$(dirname "$0")"
npm ci --no-audit --no-fund --silent
mkdir -p dist
cp node_modules/chart.js/dist/chart.umd.min.js dist/chart.umd.min.js
cp node_modules/chart.js/LICENSE.md dist/chart.js.LICENSE.md
echo "web/dist: $(ls dist | tr '\n' ' ')"
