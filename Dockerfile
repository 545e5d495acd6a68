# syntax=docker/dockerfile:1
#
# keygate container image.
#   docker build -t keygate .
#   docker run --rm -p 8080:8080 --stop-timeout 15 keygate
# Mount your own config over /etc/keygate (keygate.toml, keys.toml, certs/).

# ---- build ----------------------------------------------------------------
# Builder and runtime share Debian 12 (bookworm), so the binary's glibc matches.
FROM rust:1.95-bookworm AS builder

# cmake: pingora-core -> flate2 -> libz-ng-sys is built from source.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends cmake \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY . .
# The cargo registry and target dir are BuildKit caches, so a rebuild after a
# source change does not fetch or compile the dependencies again; the binary
# is copied out of the cache in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
    && install -m 0755 target/release/keygate /usr/local/bin/keygate

# ---- runtime --------------------------------------------------------------
# distroless/cc: glibc, libgcc, CA certificates (upstream TLS), no shell.
FROM gcr.io/distroless/cc-debian12:nonroot

LABEL org.opencontainers.image.title="keygate" \
      org.opencontainers.image.description="API-key auth gateway on Pingora: key types, tenants, scopes, per-key rate limits" \
      org.opencontainers.image.licenses="Apache-2.0"

COPY --from=builder /usr/local/bin/keygate /usr/local/bin/keygate
# Read-only for the gateway (owned by root, run as nonroot).
COPY config/docker/keygate.toml /etc/keygate/keygate.toml
COPY config/keys.toml /etc/keygate/keys.toml

# The distroless "nonroot" user (65532); every port is above 1024.
USER 65532:65532
WORKDIR /etc/keygate

# 8080 plain HTTP, 8443 HTTPS (when [server.tls] is set), 9091 admin.
EXPOSE 8080 8443 9091

# SIGTERM: /readyz turns 503, listeners stop accepting, in-flight requests
# finish for up to grace_period_secs, exit 0. Give `docker stop` more time
# than that (--stop-timeout / stop_grace_period).
STOPSIGNAL SIGTERM

HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/keygate", "healthcheck", "--config", "/etc/keygate/keygate.toml"]

ENTRYPOINT ["/usr/local/bin/keygate"]
CMD ["run", "--config", "/etc/keygate/keygate.toml"]
