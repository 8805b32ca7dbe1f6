# aether-gateway container image: a multi-stage build, a small runtime image
# (distroless, glibc + CA roots, no shell), running as a non-root user.
#
#   docker build -t aether-gateway .
#   docker run --rm -p 8080:8080 -p 3478:3478/udp \
#     -v "$PWD/config:/etc/aether-gateway:ro" aether-gateway
#
# Mount the config's directory, not the file: a file replaced by rename (as
# editors and ConfigMaps do) is not seen through a single-file bind mount,
# and the files the config names by relative paths (certificates, a
# token_file) live beside it. In a container the config must listen on
# 0.0.0.0 (or [::]), not on 127.0.0.1. The admin API on loopback is out of
# reach from outside the container: for orchestrator probes (/healthz and
# /readyz need no token) set [admin] listen = "0.0.0.0:9901",
# allow_remote = true and a token_file (see docs/configuration.md). Reload
# with `docker exec <container> aether-gateway reload --config
# /etc/aether-gateway/gateway.toml` (exits non-zero when refused), with
# `docker kill -s HUP <container>`, or by changing the mounted file
# (watched every second by default).
#
# Stopping: SIGTERM drains for [server] shutdown_drain_seconds (30) after
# shutdown_delay_seconds (0); `docker stop` waits only 10 s before SIGKILL,
# so run with `--stop-timeout 45` (Kubernetes: terminationGracePeriodSeconds
# above delay + drain). The image runs as uid/gid 65532: mounted keys and
# token files must be readable by it (e.g. mode 0640, group 65532); a
# root-owned 0600 key is a start-up error naming the file. There is no
# HEALTHCHECK (no shell or curl in the image): probe /healthz and /readyz
# on the admin port from the orchestrator.

FROM rust:1-slim-bookworm AS build
# aws-lc-rs (rustls' crypto) builds a C library: it wants cmake and a C
# compiler; the slim image has gcc but not cmake.
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# The commit `--version` reports (.git is not copied in):
#   docker build --build-arg AETHER_GIT_COMMIT=$(git rev-parse --short=12 HEAD) .
ARG AETHER_GIT_COMMIT=unknown
ENV AETHER_GIT_COMMIT=$AETHER_GIT_COMMIT
COPY . .
# The cache mounts keep the registry and the dependencies' build between
# image builds (BuildKit); the binary is copied out of the cached target.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin aether-gateway \
 && cp target/release/aether-gateway /aether-gateway

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /aether-gateway /usr/local/bin/aether-gateway
COPY examples/gateway.toml /etc/aether-gateway/gateway.toml.example
# nonroot: uid/gid 65532. Ports above 1024 need no capability.
USER nonroot:nonroot
EXPOSE 8080 9901 3478/tcp 3478/udp
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/aether-gateway"]
CMD ["run", "--config", "/etc/aether-gateway/gateway.toml"]
