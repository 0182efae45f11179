# unetrpp-serve image: Debian 12, every dependency from Debian's archive.
#   docker build -t unetrpp-serve .
#   docker run -p 50051:50051 -p 9464:9464 unetrpp-serve             # default model
#   docker run -v $PWD/conf:/conf unetrpp-serve --config /conf/server.textproto
FROM debian:bookworm-slim AS build
WORKDIR /src
COPY deploy/install-deps.sh deploy/install-deps.sh
RUN bash deploy/install-deps.sh && rm -rf /var/lib/apt/lists/*
COPY . .
RUN bash deploy/build.sh -DUPP_BUILD_TESTS=OFF -DCMAKE_INSTALL_PREFIX=/opt/unetrpp \
 && cmake --install build \
 && install -m 755 build/clients/upp-client build/tools/upp-phantom /opt/unetrpp/bin/ \
 # The runtime packages: those that own the shared libraries the binaries load.
 && ldd /opt/unetrpp/bin/* | awk '/=> \//{print $3}' | sort -u | xargs -r dpkg -S 2>/dev/null \
    | cut -d: -f1 | sort -u > /opt/unetrpp/runtime-packages.txt

FROM debian:bookworm-slim
COPY --from=build /opt/unetrpp /opt/unetrpp
RUN apt-get update -q \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      $(cat /opt/unetrpp/runtime-packages.txt) \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 unetrpp
USER 10001
ENV PATH=/opt/unetrpp/bin:$PATH
EXPOSE 50051 9464
STOPSIGNAL SIGTERM
ENTRYPOINT ["unetrpp-serve", "--listen", "0.0.0.0:50051", "--metrics", "0.0.0.0:9464"]
