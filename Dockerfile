# unetrpp-serve image (minimal until the service exists: it builds the model
# layer and runs its benchmark). Debian 12, packages only from Debian.
FROM debian:bookworm-slim AS build
WORKDIR /src
COPY deploy/install-deps.sh deploy/install-deps.sh
RUN bash deploy/install-deps.sh && rm -rf /var/lib/apt/lists/*
COPY . .
RUN bash deploy/build.sh -DUPP_BUILD_TESTS=OFF

FROM debian:bookworm-slim
RUN apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      libtorch1.13 libopenblas0-pthread libdnnl2 \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/build/tools/upp-forward /src/build/tools/upp-bench-model /usr/local/bin/
ENTRYPOINT ["upp-bench-model"]
CMD ["--preset", "synapse", "--threads", "2"]
