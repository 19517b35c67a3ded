# The action's image: the static ec2-deploy binary, a docker CLI with the buildx plugin (BuildKit),
# and CA certificates. action.yml runs it prebuilt (docker://…): built per job, it would compile
# Rust every time.
#
# Reproducible: both bases are pinned by digest and the build is --locked to Cargo.lock. To move a
# base, take the new digest from `docker buildx imagetools inspect rust:1.95-slim-trixie` (or
# debian:trixie-slim) and change it here; nothing else names them. The bases are build arguments
# so that CI, which cannot pull from any registry, builds this same file against bases it made
# itself (scripts/image).
ARG RUST_IMAGE=docker.io/library/rust:1.95-slim-trixie@sha256:28846ec5a6bcfcddb93f403ba7071bd579787852b2f2ac3839965620e8bd9456
ARG RUNTIME_IMAGE=docker.io/library/debian:trixie-slim@sha256:3a39a0592364683e6bab97937b72cad5a8fa6dcbbee90edb3bb48c7f8e94f258

FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock rustfmt.toml ./
COPY src src
COPY examples examples
# Static: the binary needs nothing from the runtime base, and as PID 1 it handles its own signals.
ENV RUSTFLAGS="-C target-feature=+crt-static"
RUN cargo build --release --locked --bin ec2-deploy --target x86_64-unknown-linux-gnu \
    && cp target/x86_64-unknown-linux-gnu/release/ec2-deploy /ec2-deploy

FROM ${RUNTIME_IMAGE}
# Debian 13's docker CLI (26.1) speaks API 1.45, which Docker Engine 29 still accepts (its floor
# is 1.44; Debian 12's 20.10 client is refused), and builds through the buildx plugin. Package
# versions are not pinned: the base is, and Debian replaces versions in place with security
# updates, so an exact pin would break the next build.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates docker-cli docker-buildx \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /ec2-deploy /usr/local/bin/ec2-deploy
ENV EC2_DEPLOY_DOCKER=/usr/bin/docker
ENTRYPOINT ["/usr/local/bin/ec2-deploy"]
