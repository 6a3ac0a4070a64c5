# syntax=docker/dockerfile:1
# The `outbound` image: built from this repository, run by docker-compose.yml.
#
#   docker build -t outbound:local .
#
# Stage 1 compiles with the C/C++ toolchain RocksDB's bindings (libclang) and
# librdkafka's bundled build (cmake; OpenSSL and Cyrus SASL for TLS and SASL) need,
# the same packages as scripts/setup-build.sh. Stage 2 is a slim Debian with the
# shared libraries the binary links against.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS builder
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      clang libclang-dev cmake make g++ pkg-config zlib1g-dev libzstd-dev liblz4-dev \
      libssl-dev libsasl2-dev python3 \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# Registry and target caches survive between builds (BuildKit).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --bin outbound \
 && install -D -m 0755 target/release/outbound /out/outbound

FROM debian:${DEBIAN_RELEASE}-slim AS runtime
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      ca-certificates curl zlib1g libzstd1 liblz4-1 libssl3 libsasl2-2 libsasl2-modules-gssapi-mit \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/outbound --create-home outbound
COPY --from=builder /out/outbound /usr/local/bin/outbound
COPY deploy/docker-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
USER outbound
WORKDIR /var/lib/outbound
# State (RocksDB) lives here; it is a cache of the changelog topics, so a
# fresh container restores it from Kafka.
VOLUME ["/var/lib/outbound"]
# src/config.rs reads OUTBOUND_<SECTION>__<KEY> variables.
ENV OUTBOUND_STATE__DIR=/var/lib/outbound/state \
    OUTBOUND_METRICS__LISTEN=0.0.0.0:9464 \
    RUST_LOG=info
EXPOSE 9464
ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]
CMD ["outbound", "run"]
