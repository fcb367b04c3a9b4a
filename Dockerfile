# Tallylight's container image: one image for every role, picked by the command
# (`tally serve`, `tally serve --media off`, `tally node`, `tally worker`, `tally migrate`).
#
#   docker build -t tallylight:latest .
#   docker run -p 8080:8080 -e PUBLIC_URL=http://localhost:8080 -v tallylight:/var/lib/tallylight tallylight:latest    # the embedded mode
#
# The distributed mode: infra/compose/compose.yaml and infra/kubernetes/ (see infra/README.md).
# System packages come from infra/scripts/install-system-deps.sh and the pages' browser libraries from
# infra/scripts/install-web-deps.sh, the same scripts `make test` runs; Python packages as pinned in
# pyproject.toml.

FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY infra/scripts/install-system-deps.sh infra/scripts/install-web-deps.sh infra/scripts/
RUN bash infra/scripts/install-system-deps.sh build
# hls.js, dash.js and uPlot, without the test-only packages.
COPY web/package.json web/package-lock.json web/
RUN bash infra/scripts/install-web-deps.sh runtime
# The dependencies first (a layer that changes only with pyproject.toml), then the project itself.
COPY pyproject.toml README.md ./
RUN python -m venv /opt/tallylight/venv \
 && /opt/tallylight/venv/bin/pip install --no-cache-dir --quiet --upgrade pip \
 && python -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' \
      > /tmp/requirements.txt \
 && /opt/tallylight/venv/bin/pip install --no-cache-dir --quiet -r /tmp/requirements.txt
COPY bus/ bus/
COPY cluster/ cluster/
COPY lifecycle/ lifecycle/
COPY recorder/ recorder/
COPY sfu/ sfu/
COPY signaling/ signaling/
COPY telemetry/ telemetry/
RUN /opt/tallylight/venv/bin/pip install --no-cache-dir --quiet --no-deps . \
 && /opt/tallylight/venv/bin/pip check


FROM python:3.11-slim-bookworm AS runtime
LABEL org.opencontainers.image.title="Tallylight" \
      org.opencontainers.image.description="Open-source live streaming platform: WebRTC, RTMP, LL-HLS, chat, recording." \
      org.opencontainers.image.licenses="Apache-2.0"
COPY infra/scripts/install-system-deps.sh /opt/tallylight/infra/scripts/
RUN bash /opt/tallylight/infra/scripts/install-system-deps.sh runtime \
 && rm -rf /var/lib/apt/lists/*
# Numeric ids: Kubernetes' runAsNonRoot checks them (infra/kubernetes/ runs as 10001). The data
# folders belong to the user, so named volumes mounted there start out writable; /gateway is where the
# compose file's gateway-config writes the gateway's nginx.conf (a volume the nginx container reads).
RUN groupadd --system --gid 10001 tallylight \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/tallylight --shell /usr/sbin/nologin tallylight \
 && install -d -o 10001 -g 10001 /var/lib/tallylight /var/lib/tallylight/media /var/lib/tallylight/spool /gateway
COPY --from=build /opt/tallylight/venv /opt/tallylight/venv
COPY web/ /opt/tallylight/web/
# Only what the server serves of the browser libraries (signaling/web_pages.py), with their licences.
COPY --from=build /src/web/node_modules/hls.js/dist/ /opt/tallylight/web/node_modules/hls.js/dist/
COPY --from=build /src/web/node_modules/hls.js/LICENSE /opt/tallylight/web/node_modules/hls.js/
COPY --from=build /src/web/node_modules/dashjs/dist/modern/esm/ /opt/tallylight/web/node_modules/dashjs/dist/modern/esm/
COPY --from=build /src/web/node_modules/dashjs/LICENSE.md /opt/tallylight/web/node_modules/dashjs/
COPY --from=build /src/web/node_modules/uplot/dist/ /opt/tallylight/web/node_modules/uplot/dist/
COPY --from=build /src/web/node_modules/uplot/LICENSE /opt/tallylight/web/node_modules/uplot/
# The gateway's configuration renderer (the compose file's gateway-config runs it).
COPY infra/gateway/ /opt/tallylight/infra/gateway/

ENV PATH=/opt/tallylight/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    WEB_ROOT=/opt/tallylight/web \
    DATA_DIR=/var/lib/tallylight \
    HOST=0.0.0.0 \
    PORT=8080
WORKDIR /var/lib/tallylight
USER 10001:10001
# HTTP (pages, API, WHIP/WHEP, chat, HLS/DASH, /metrics) and RTMP ingest. WebRTC media is UDP on
# ports from WEBRTC_UDP_PORTS (any when unset): publish that range as the same numbers and set
# WEBRTC_ANNOUNCED_ADDRESSES, or run on the host's network.
EXPOSE 8080/tcp 1935/tcp
# Liveness of `tally serve` and `tally node` on this container's PORT (over TLS when TLS_CERT is set).
# `tally worker` and `tally migrate` serve nothing: turn it off for them (compose: healthcheck disable).
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
  CMD ["/opt/tallylight/venv/bin/python", "-c", "import os, ssl, urllib.request; tls = bool(os.environ.get('TLS_CERT')); urllib.request.urlopen(('https' if tls else 'http') + '://127.0.0.1:' + os.environ.get('PORT', '8080') + '/healthz', timeout=4, context=ssl._create_unverified_context())"]
CMD ["tally", "serve"]
