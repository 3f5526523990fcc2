# SPDX-License-Identifier: Apache-2.0
# nettel-aggregator: one statically linked binary on distroless/static,
# running as an unprivileged uid/gid (10001) that owns nothing in the image.
#
#   docker build -f deploy/images/aggregator.Dockerfile -t nettel-aggregator:0.1.0 .
#
# Static glibc (crt-static): the aggregator makes no NSS lookups (it connects
# to the API server by the IP in KUBERNETES_SERVICE_HOST, TLS through rustls),
# so a static glibc binary needs no /etc/nsswitch.conf or libnss_* at run time.

# Pin base images by digest in your build (docker buildx imagetools inspect).
FROM docker.io/library/rust:1.89-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends protobuf-compiler \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --release --locked --target x86_64-unknown-linux-gnu -p nettel-aggregator \
 && install -D -m 0555 target/x86_64-unknown-linux-gnu/release/nettel-aggregator /out/nettel-aggregator

FROM gcr.io/distroless/static-debian12:nonroot AS runtime
COPY --from=build /out/nettel-aggregator /usr/local/bin/nettel-aggregator
USER 10001:10001
EXPOSE 9090
ENTRYPOINT ["/usr/local/bin/nettel-aggregator"]
HEALTHCHECK NONE
