# syntax=docker/dockerfile:1.7
# The control plane: API, webhook intake, recorder; `migrate`, `regions`, `shards` commands.
# Build from the repository root:
#   docker build -f deploy/docker/control-plane.Dockerfile -t switchyard/control-plane .

ARG RUST_VERSION=1.95.0
ARG DEBIAN=bookworm

# --- toolchain: Rust, mold (the workspace links with it), cmake (aws-lc-sys), cargo-chef.
FROM rust:${RUST_VERSION}-slim-${DEBIAN} AS chef
# Debian packages follow the base image's point release: pinning their versions would
# break the build whenever the archive moves on.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends mold cmake g++ make pkg-config \
 && rm -rf /var/lib/apt/lists/*
RUN cargo install --locked cargo-chef@0.1.73
WORKDIR /src

# --- the dependency recipe: changes only when a Cargo.toml or Cargo.lock does.
FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

# --- dependencies, compiled once and cached as a layer; identical in the three
# Dockerfiles, so one build's layer serves the others.
FROM chef AS builder
COPY --from=planner /src/recipe.json recipe.json
# The workspace's linker flags must apply to the dependencies too, or the final build
# would see different flags and recompile them all.
COPY .cargo/ .cargo/
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    cargo chef cook --release --locked --workspace --recipe-path recipe.json
COPY . .
# Queries are checked against the committed .sqlx/ data: no database at build time.
ENV SQLX_OFFLINE=true
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    cargo build --release --locked -p switchyard-control-plane --bin control-plane \
 && rustc --edition 2021 -O -o /src/target/release/healthcheck deploy/docker/healthcheck.rs

# --- runtime: glibc and CA certificates, no shell, user 65532.
FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
COPY --from=builder /src/target/release/control-plane /usr/local/bin/control-plane
COPY --from=builder /src/target/release/healthcheck /usr/local/bin/healthcheck
COPY deploy/docker/config/control-plane.toml /etc/switchyard/control-plane.toml
ENV SWITCHYARD_CP_CONFIG=/etc/switchyard/control-plane.toml
USER 65532:65532
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["/usr/local/bin/healthcheck", "http://127.0.0.1:8080/healthz"]
ENTRYPOINT ["/usr/local/bin/control-plane"]
CMD ["serve"]
