# SPDX-License-Identifier: Apache-2.0
# nettel-loader: one statically linked binary on distroless/static.
#
#   docker build -f deploy/images/loader.Dockerfile -t nettel-loader:0.1.0 .
#
# The binary is linked statically against glibc (crt-static), which is what
# builds on Debian bookworm without extra toolchains; the loader uses no NSS
# (no user/host lookups), so static glibc is safe. The BPF objects are embedded
# in the binary at build time (bpf/build.rs), so the image needs no clang.
# The loader runs as uid 0 because Kubernetes grants added capabilities
# (BPF, PERFMON) only to uid 0; it holds nothing else, and drops those two after
# attach (see deploy/base/daemonset.yaml and security/capabilities.md).

# Pin base images by digest in your build (docker buildx imagetools inspect).
FROM docker.io/library/rust:1.89-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends clang llvm libbpf-dev libclang-dev protobuf-compiler \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --release --locked --target x86_64-unknown-linux-gnu -p nettel-loader \
 && install -D -m 0555 target/x86_64-unknown-linux-gnu/release/nettel-loader /out/nettel-loader

FROM gcr.io/distroless/static-debian12:nonroot AS runtime
COPY --from=build /out/nettel-loader /usr/local/bin/nettel-loader
# uid 0 is set here on purpose and overridden by nothing: see the header.
USER 0:10001
ENTRYPOINT ["/usr/local/bin/nettel-loader"]
CMD ["run"]
HEALTHCHECK NONE
