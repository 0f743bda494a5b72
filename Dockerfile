# syntax=docker/dockerfile:1.7
#
# One image for the three services of microbatch: the ECS tasks run
#   microbatch produce | microbatch consume | microbatch import
# (the subcommand is the task's command; the entrypoint is the binary).
# Configuration: an optional TOML file plus MICROBATCH_* environment variables;
# AWS endpoints from the standard AWS_ENDPOINT_URL* variables. See docs/DEPLOY.md.
#
#   docker build -t microbatch .
#   docker build --platform linux/arm64 -t microbatch .   # for Graviton (cpu_architecture = ARM64)

ARG RUST_VERSION=1.95.0

################################################################################
# Build: the workspace's release binary
################################################################################
# Debian 12 (bookworm) on both sides, so the binary's glibc matches the runtime's.
FROM rust:${RUST_VERSION}-slim-bookworm AS build
ARG RUST_VERSION
# rust-toolchain.toml pins the same toolchain and lists rustfmt and clippy;
# naming the toolchain here keeps rustup from fetching components a release
# build does not use.
ENV RUSTUP_TOOLCHAIN=${RUST_VERSION} \
    CARGO_INCREMENTAL=0 \
    CARGO_TERM_COLOR=never

WORKDIR /src
COPY . .

# The registry and target caches survive between builds (BuildKit); the binary
# is copied out of the cached target directory in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked -p microbatch-adapters --bin microbatch \
 && install -D -m 0755 target/release/microbatch /out/microbatch

################################################################################
# Runtime: glibc + libgcc + CA certificates, no shell, non-root
################################################################################
FROM gcr.io/distroless/cc-debian12:nonroot AS runtime

COPY --from=build /out/microbatch /usr/local/bin/microbatch
# The catalog (event type -> tables and columns) the services read from
# MICROBATCH_CATALOG__DIR. These are the examples; a deployment bakes its own:
#   FROM microbatch:TAG
#   COPY my-catalog/ /etc/microbatch/catalog/
COPY examples/catalog/ /etc/microbatch/catalog/

# distroless "nonroot" (65532). ECS mounts a writable /tmp; the root file
# system is read-only in the task definitions.
USER 65532:65532
ENV MICROBATCH_CATALOG__DIR=/etc/microbatch/catalog \
    MICROBATCH_LOG_FORMAT=json
# The producer's port (MICROBATCH_PRODUCER__LISTEN=0.0.0.0:8080 in ECS).
EXPOSE 8080

# No HEALTHCHECK: the image has no shell or curl. ECS checks the producer
# through the load balancer (GET /readyz); consume and import are watched by
# their alarms (docs/DEPLOY.md).
ENTRYPOINT ["/usr/local/bin/microbatch"]
CMD ["--help"]
