# The action's image: the static ec2-deploy binary, a docker CLI that builds with BuildKit, and CA
# certificates. action.yml runs it prebuilt (docker://…): built per job, it would compile Rust
# every time.
#
# The base images are build arguments: .github/workflows/release.yml passes them pinned by digest;
# a test can pass a base it made itself (nothing can be pulled in this project's CI).
ARG RUST_IMAGE=docker.io/library/rust:1.85-slim-bookworm
ARG RUNTIME_IMAGE=docker.io/library/debian:bookworm-slim

FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock rustfmt.toml ./
COPY src src
COPY examples examples
# A static binary: it runs on any base, and as PID 1 it handles its own signals.
ENV RUSTFLAGS="-C target-feature=+crt-static"
RUN cargo build --release --locked --bin ec2-deploy --target x86_64-unknown-linux-gnu \
    && cp target/x86_64-unknown-linux-gnu/release/ec2-deploy /ec2-deploy

FROM ${RUNTIME_IMAGE}
# Debian's docker.io client still builds with BuildKit (DOCKER_BUILDKIT=1) without a buildx
# plugin. Versions are not pinned: the base is pinned by digest, and Debian replaces package
# versions in place with security updates, so exact pins would break the next build.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends docker.io ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /ec2-deploy /usr/local/bin/ec2-deploy
ENV EC2_DEPLOY_DOCKER=/usr/bin/docker
ENTRYPOINT ["/usr/local/bin/ec2-deploy"]
