# syntax=docker/dockerfile:1.7
# The predictive autoscaler: forecasts each region's job arrivals and resizes the worker
# Deployments through their scale subresource.
# Build from the repository root:
#   docker build -f deploy/docker/autoscaler.Dockerfile -t switchyard/autoscaler .

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
    cargo build --release --locked -p switchyard-autoscaler --bin autoscaler \
 && rustc --edition 2021 -O -o /src/target/release/healthcheck deploy/docker/healthcheck.rs

FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
COPY --from=builder /src/target/release/autoscaler /usr/local/bin/autoscaler
COPY --from=builder /src/target/release/healthcheck /usr/local/bin/healthcheck
COPY deploy/docker/config/autoscaler.toml /etc/switchyard/autoscaler.toml
ENV SWITCHYARD_AUTOSCALER_CONFIG=/etc/switchyard/autoscaler.toml
USER 65532:65532
EXPOSE 9100
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["/usr/local/bin/healthcheck", "http://127.0.0.1:9100/healthz"]
ENTRYPOINT ["/usr/local/bin/autoscaler"]
CMD ["run"]
