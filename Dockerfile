# unetrpp-serve image: Debian 12, every dependency from Debian's archive.
#
#   bash deploy/docker/build-image.sh            # starts an engine and makes the base image if needed
#   DOCKER_BUILDKIT=1 docker build --network host -t unetrpp-serve:TAG .   # where both exist
#   docker run --network host --read-only --tmpfs /tmp --cap-drop ALL \
#     --security-opt no-new-privileges --memory 8g --stop-timeout 40 unetrpp-serve:TAG
#
# The image serves /etc/unetrpp/server.textproto (deploy/docker/server.textproto:
# the default phantom-CT model); mount another configuration and pass
# `--config PATH`, or add flags after the image name: they replace the CMD,
# and explicit flags override the file's values (docs/deploy.md).
# BuildKit is needed for the compiler cache mount: a rebuild after a small
# change recompiles only what changed.
ARG BASE=debian:bookworm-slim

FROM ${BASE} AS build
ARG UPP_JOBS=2
WORKDIR /src
COPY deploy/install-deps.sh deploy/apt-backports.sh deploy/
RUN bash deploy/install-deps.sh --build && rm -rf /var/lib/apt/lists/*
COPY . .
# One layer: build, install, list the runtime packages, drop the build tree.
RUN --mount=type=cache,target=/root/.cache/ccache,id=unetrpp-ccache \
    UPP_JOBS=${UPP_JOBS} bash deploy/build.sh -DUPP_BUILD_TESTS=OFF -DCMAKE_INSTALL_PREFIX=/opt/unetrpp \
 && cmake --install build \
 && install -m 755 build/clients/upp-client build/tools/upp-phantom /opt/unetrpp/bin/ \
 && install -D -m 644 deploy/docker/server.textproto /opt/unetrpp/etc/server.textproto \
 # The runtime packages: those that own the shared libraries the binaries
 # load (symlinks resolved: BLAS is reached through Debian's alternatives).
 && ldd /opt/unetrpp/bin/* | awk '/=> \//{print $3}' | sort -u | xargs -r readlink -f | xargs -r dpkg -S 2>/dev/null \
    | cut -d: -f1 | sort -u > /opt/unetrpp/runtime-packages.txt \
 && rm -rf build

FROM ${BASE}
COPY --from=build /opt/unetrpp /opt/unetrpp
# The runtime libraries may include OpenTelemetry's, from bookworm-backports
# (pinned to them alone, as in the build stage).
COPY deploy/apt-backports.sh /tmp/apt-backports.sh
RUN bash /tmp/apt-backports.sh && rm /tmp/apt-backports.sh \
 && apt-get update -q \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      $(cat /opt/unetrpp/runtime-packages.txt) \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin unetrpp \
 && mkdir -p /etc/unetrpp && mv /opt/unetrpp/etc/server.textproto /etc/unetrpp/server.textproto
USER 10001
ENV PATH=/opt/unetrpp/bin:$PATH
EXPOSE 50051 9464
# The gRPC health service, as Kubernetes probes it. With TLS configured, the
# orchestrator's own probe replaces this (docs/deploy.md).
HEALTHCHECK --interval=15s --timeout=12s --start-period=120s --retries=3 \
  CMD ["upp-client", "--server", "127.0.0.1:50051", "health"]
# SIGTERM drains: health NOT_SERVING, new calls UNAVAILABLE, in-flight calls
# finish within drain_grace_seconds, exit 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["unetrpp-serve"]
CMD ["--config", "/etc/unetrpp/server.textproto"]
