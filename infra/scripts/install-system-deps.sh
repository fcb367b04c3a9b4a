#!/usr/bin/env bash
# Installs the Debian packages Tallylight needs, by profile; each profile includes the ones before it:
#   runtime         what a running `tally` process needs: CA certificates (S3, OpenID Connect, webhooks,
#                   push) and the shared libraries the Python wheels link outside their own bundles
#                   (PyAV brings its FFmpeg; nothing shells out to ffmpeg). The image's final stage.
#   build           + npm, which installs the pages' browser libraries. The image's build stage.
#   test (default)  + what the test suite drives for real (browser, media tools, servers, config checkers).
#                   `make test` runs this.
# Idempotent: installs only what is missing, and nothing when everything is present.
#   install-system-deps.sh [runtime|build|test] [--list]   (--list: print the profile's packages, install nothing)
set -euo pipefail

profile=test
list=0
for arg in "$@"; do
  case "$arg" in
    runtime|build|test) profile=$arg ;;
    --list) list=1 ;;
    *) echo "usage: $0 [runtime|build|test] [--list]" >&2; exit 2 ;;
  esac
done

installed() {  # a Debian package, installed
  dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null | grep -qx installed
}

# profile | package | present when (a command that succeeds)
table=(
  "runtime|ca-certificates|installed ca-certificates"
  "runtime|libstdc++6|installed libstdc++6"
  "runtime|libgcc-s1|installed libgcc-s1"
  "runtime|zlib1g|installed zlib1g"
  "build|npm|command -v npm"  # hls.js, dash.js and uPlot for the pages (infra/scripts/install-web-deps.sh)
  "test|chromium|command -v chromium"
  "test|ffmpeg|command -v ffmpeg"
  "test|postgresql|command -v pg_ctlcluster"
  "test|redis-server|command -v redis-server"
  "test|nginx-light|command -v nginx || [ -x /usr/sbin/nginx ]"  # the CDN edge in tests
  "test|libnginx-mod-stream|[ -e /usr/lib/nginx/modules/ngx_stream_module.so ]"  # a TCP balancer with PROXY headers (tests/test_rtmp_proxy.py)
  "test|prometheus|command -v promtool"  # the shipped monitoring config, checked and run
  "test|coturn|command -v turnserver"  # TURN relays, from turn/turnserver.conf (tests/test_turn.py)
  "test|docker-compose|command -v docker-compose"  # infra/compose/compose.yaml, checked (tests/test_containers.py)
)

case "$profile" in
  runtime) profiles=" runtime " ;;
  build) profiles=" runtime build " ;;
  test) profiles=" runtime build test " ;;
esac

need=()
for row in "${table[@]}"; do
  IFS='|' read -r row_profile package probe <<< "$row"
  [[ "$profiles" == *" $row_profile "* ]] || continue
  if [ "$list" = 1 ]; then
    echo "$package"
  elif ! eval "$probe" >/dev/null 2>&1; then
    need+=("$package")
  fi
done

if [ "$list" = 1 ] || [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "missing system packages: ${need[*]} (run as root, or: sudo apt-get install ${need[*]})" >&2
  exit 1
fi
echo "installing system packages: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# Install without starting anything: the tests start their own nginx on loopback ports.
policy=/usr/sbin/policy-rc.d
made_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy" && made_policy=1
fi
trap '[ "$made_policy" = 1 ] && rm -f "$policy"' EXIT
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
