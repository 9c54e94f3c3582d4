# chorus: one image with both binaries.
#
# With registry access (the usual case; BuildKit, the default builder, builds only the
# stages the final one needs):
#   docker build -t chorus .
# Where no image can be pulled, scripts/docker-image.sh builds the same runtime on a base
# made from Debian packages, with binaries compiled on the host:
#   docker build --build-arg BASE=chorus-base:bookworm --target runtime-host -t chorus .
#
# Ports: 8080 (HTTP API), 4000 (replication; master only). Data: /var/lib/chorus.
#   docker run -p 8080:8080 chorus master-node --name m --http-port 8080 --host 0.0.0.0
#   docker run chorus secondary-node --name s1 --http-port 8080 --host 0.0.0.0 --master-ip m

ARG BASE=debian:bookworm-slim

# --- everything about the runtime except where the binaries come from ---
FROM ${BASE} AS runtime-base
RUN groupadd --system chorus \
 && useradd --system --gid chorus --home-dir /var/lib/chorus --shell /usr/sbin/nologin chorus \
 && mkdir -p /var/lib/chorus && chown chorus:chorus /var/lib/chorus \
 && mkdir -p /etc/chorus && chown chorus:chorus /etc/chorus && chmod 700 /etc/chorus
COPY docker/healthcheck /usr/local/bin/chorus-healthcheck
USER chorus
WORKDIR /var/lib/chorus
# Each node keeps its log in ./data/NAME, that is /var/lib/chorus/data/NAME.
VOLUME /var/lib/chorus
EXPOSE 8080 4000
ENV CHORUS_HTTP_PORT=8080
HEALTHCHECK --interval=2s --timeout=3s --start-period=10s --retries=3 CMD ["chorus-healthcheck"]
CMD ["master-node", "--help"]

# --- the runtime with binaries compiled on the host (Debian bookworm, glibc 2.36) ---
FROM runtime-base AS runtime-host
ARG PROFILE=release
COPY target/${PROFILE}/master-node target/${PROFILE}/secondary-node /usr/local/bin/

# --- build from source ---
FROM rust:1.90-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --workspace --bins \
 && mkdir /out && cp target/release/master-node target/release/secondary-node /out/

# --- the runtime with binaries built from source: the default target ---
FROM runtime-base AS runtime
COPY --from=build /out/master-node /out/secondary-node /usr/local/bin/
