# syntax=docker/dockerfile:1.7
# The regional job runner. Its `command` executor runs agent commands in a fresh
# workspace with the repository cloned, so the runtime has a shell, git and CA
# certificates (Debian slim), and tini as PID 1 to reap the commands' orphans.
# Build from the repository root:
#   docker build -f deploy/docker/worker.Dockerfile -t switchyard/worker .

ARG RUST_VERSION=1.95.0
ARG DEBIAN=bookworm

FROM rust:${RUST_VERSION}-slim-${DEBIAN} AS chef
# Debian packages follow the base image's point release: pinning their versions would
# break the build whenever the archive moves on.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends mold cmake g++ make pkg-config \
 && rm -rf /var/lib/apt/lists/*
RUN cargo install --locked cargo-chef@0.1.73
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /src/recipe.json recipe.json
# The workspace's linker flags must apply to the dependencies too, or the final build
# would see different flags and recompile them all.
COPY .cargo/ .cargo/
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    cargo chef cook --release --locked --workspace --recipe-path recipe.json
COPY . .
ENV SQLX_OFFLINE=true
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    cargo build --release --locked -p switchyard-worker --bin worker \
 && rustc --edition 2021 -O -o /src/target/release/healthcheck deploy/docker/healthcheck.rs

FROM debian:${DEBIAN}-slim AS runtime
# Debian packages follow the base image's point release: pinning their versions would
# break the build whenever the archive moves on.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates git tini \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 65532 switchyard \
 && useradd --system --uid 65532 --gid 65532 --home-dir /var/lib/switchyard --no-create-home --shell /usr/sbin/nologin switchyard \
 && install -d -o 65532 -g 65532 -m 0750 /var/lib/switchyard /var/lib/switchyard/workspaces
COPY --from=builder /src/target/release/worker /usr/local/bin/worker
COPY --from=builder /src/target/release/healthcheck /usr/local/bin/healthcheck
COPY deploy/docker/config/worker.toml /etc/switchyard/worker.toml
ENV SWITCHYARD_WORKER_CONFIG=/etc/switchyard/worker.toml
USER 65532:65532
WORKDIR /var/lib/switchyard
EXPOSE 9090
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["/usr/local/bin/healthcheck", "http://127.0.0.1:9090/healthz"]
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/worker"]
CMD ["run"]
