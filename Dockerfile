# syntax=docker/dockerfile:1
# The one `wattprint` binary in a small non-root runtime image (docs/deployment.md: Images).
#   docker build -t wattprint:dev .
#   docker run --rm wattprint:dev --help
# librdkafka is built from source into the binary by rdkafka-sys, protobuf code by protox
# (no protoc), SQLite is bundled, and NVML is loaded at run time from the host's driver (the
# NVIDIA container runtime mounts it): the runtime needs only libc, zlib and CA certificates.

FROM rust:1.89-bookworm AS build
WORKDIR /src
# buildpack-deps (the rust image's base) has gcc, g++, make, pkg-config and zlib for librdkafka.
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p wattprint \
    && install -D -m 0755 target/release/wattprint /out/wattprint

FROM debian:bookworm-slim AS runtime
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates zlib1g \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 wattprint \
    && useradd --system --uid 10001 --gid wattprint --home-dir /var/lib/wattprint \
       --shell /usr/sbin/nologin wattprint \
    && install -d -o wattprint -g wattprint /var/lib/wattprint /var/lib/wattprint/spool
COPY --from=build /out/wattprint /usr/local/bin/wattprint
# The shipped data (traces, eGRID tables, demo intensity), found through data_root.
COPY data /usr/share/wattprint/data
COPY deploy/wattprint.example.toml /etc/wattprint/wattprint.toml
ENV WATTPRINT_CONFIG=/etc/wattprint/wattprint.toml \
    WATTPRINT_DATA_ROOT=/usr/share/wattprint/data \
    WATTPRINT_DATA_DIR=/var/lib/wattprint \
    RUST_LOG=info
USER 10001:10001
WORKDIR /var/lib/wattprint
# gateway gRPC, query API HTTP, metrics listener
EXPOSE 50051 8080 9464
ENTRYPOINT ["/usr/local/bin/wattprint"]
# `up` in a container: listen beyond loopback (the defaults are 127.0.0.1).
CMD ["up", "--api-listen", "0.0.0.0:8080", "--gateway-listen", "0.0.0.0:50051"]
