#!/usr/bin/env bash
# Installs the browser libraries the pages load as files into web/node_modules, exactly as pinned in
# web/package-lock.json (npm ci), by profile:
#   test (default)  every package, with the test-only ones (axe-core, Shaka Player): `make web-deps`
#   runtime         only "dependencies" (hls.js, dash.js, uPlot): what `tally serve` serves; the image
#   install-web-deps.sh [runtime|test]
set -euo pipefail

case "${1:-test}" in
  test) omit=() ;;
  runtime) omit=(--omit=dev) ;;
  *) echo "usage: $0 [runtime|test]" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/../../web"
npm ci --no-audit --no-fund --loglevel=error "${omit[@]}"
touch node_modules/.installed
