# The action's image: the static ec2-deploy binary, a docker CLI with the buildx plugin (BuildKit),
# and CA certificates, for linux/amd64 and linux/arm64. action.yml runs it prebuilt, pinned by
# digest (scripts/release): built per job, it would compile Rust every time.
#
# Nothing runs on the target platform: the binary is cross-compiled on the build machine, and the
# target's Debian packages are unpacked there too, so an arm64 image builds without emulation.
#
# Reproducible: both bases are pinned by digest and the build is --locked to Cargo.lock. To move a
# base, take the new digest from `docker buildx imagetools inspect rust:1.95-slim-trixie` (or
# debian:trixie-slim) and change it here; nothing else names them. The bases are build arguments
# so that CI, which cannot pull from any registry, builds this same file against bases it made
# itself (scripts/image).
ARG RUST_IMAGE=docker.io/library/rust:1.95-slim-trixie@sha256:28846ec5a6bcfcddb93f403ba7071bd579787852b2f2ac3839965620e8bd9456
ARG RUNTIME_IMAGE=docker.io/library/debian:trixie-slim@sha256:3a39a0592364683e6bab97937b72cad5a8fa6dcbbee90edb3bb48c7f8e94f258

FROM --platform=$BUILDPLATFORM ${RUST_IMAGE} AS build
ARG BUILDARCH
ARG TARGETARCH
WORKDIR /src
COPY Cargo.toml Cargo.lock rustfmt.toml ./
COPY src src
COPY examples examples
# Static: the binary needs nothing from the runtime base, and as PID 1 it handles its own signals.
ENV RUSTFLAGS="-C target-feature=+crt-static"
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# For another architecture: Debian's cross gcc and glibc (aws-lc-sys compiles C), and the Rust
# target's standard library.
# hadolint ignore=DL3008
RUN set -eu; \
    case "$TARGETARCH" in \
      amd64) target=x86_64-unknown-linux-gnu gnu=x86_64-linux-gnu gcc=gcc-x86-64-linux-gnu ;; \
      arm64) target=aarch64-unknown-linux-gnu gnu=aarch64-linux-gnu gcc=gcc-aarch64-linux-gnu ;; \
      *) echo "no build for TARGETARCH=$TARGETARCH (amd64 and arm64 are built)" >&2; exit 1 ;; \
    esac; \
    if [ "$TARGETARCH" != "$BUILDARCH" ]; then \
      apt-get update; \
      apt-get install -y --no-install-recommends "$gcc" "libc6-dev-$TARGETARCH-cross"; \
      rm -rf /var/lib/apt/lists/*; \
      linker="CARGO_TARGET_$(echo "$target" | tr 'a-z-' 'A-Z_')_LINKER"; \
      export "$linker=$gnu-gcc" "CC_$(echo "$target" | tr '-' '_')=$gnu-gcc"; \
      if command -v rustup >/dev/null; then rustup target add "$target"; fi; \
    fi; \
    cargo build --release --locked --bin ec2-deploy --target "$target"; \
    cp "target/$target/release/ec2-deploy" /ec2-deploy

# Debian 13's docker CLI (26.1) speaks API 1.45, which Docker Engine 29 still accepts (its floor
# is 1.44; Debian 12's 20.10 client is refused), and builds through the buildx plugin. Both depend
# on libc6 alone, which the runtime base has: their packages for the target architecture are
# unpacked here and copied in. Versions are not pinned: the base is, and Debian replaces versions
# in place with security updates, so an exact pin would break the next build.
# (On the Rust base: it is Debian 13 for the build machine's architecture, and already there.)
FROM --platform=$BUILDPLATFORM ${RUST_IMAGE} AS packages
ARG TARGETARCH
WORKDIR /debs
# hadolint ignore=DL3008
RUN set -eu; \
    dpkg --add-architecture "$TARGETARCH"; \
    apt-get update; \
    apt-get install -y --no-install-recommends ca-certificates; \
    mkdir /rootfs; \
    apt-get download "docker-cli:$TARGETARCH" "docker-buildx:$TARGETARCH"; \
    for deb in /debs/*.deb; do dpkg-deb -x "$deb" /rootfs; done; \
    rm -rf /rootfs/usr/share/doc /rootfs/usr/share/man /rootfs/usr/share/bash-completion /rootfs/usr/share/zsh /rootfs/usr/share/fish; \
    mkdir -p /rootfs/etc/ssl/certs; \
    cp /etc/ssl/certs/ca-certificates.crt /rootfs/etc/ssl/certs/; \
    rm -rf /var/lib/apt/lists/*

FROM ${RUNTIME_IMAGE}
# What a registry and a package page show (GHCR links the package to its repository by source).
ARG VERSION=dev
ARG REVISION=unknown
ARG SOURCE=https://github.com/org/ec2-deploy-action
LABEL org.opencontainers.image.title="ec2-deploy-action" \
      org.opencontainers.image.description="Deploy a container image to EC2 instances found by tag, through SSM Run Command." \
      org.opencontainers.image.source="$SOURCE" \
      org.opencontainers.image.version="$VERSION" \
      org.opencontainers.image.revision="$REVISION" \
      org.opencontainers.image.licenses="MIT OR Apache-2.0"
COPY --from=packages /rootfs/ /
COPY --from=build /ec2-deploy /usr/local/bin/ec2-deploy
ENV EC2_DEPLOY_DOCKER=/usr/bin/docker
ENTRYPOINT ["/usr/local/bin/ec2-deploy"]
