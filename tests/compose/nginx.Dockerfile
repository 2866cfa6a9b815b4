# Stands in for the official `nginx:1.27` image in tests/api/compose.rs: Debian's nginx on the
# local base image, its logs on the container's output, configured from /etc/nginx/conf.d as
# the official image is.
FROM debian:bookworm-slim
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends nginx-light \
    && rm -rf /var/lib/apt/lists/* /etc/nginx/sites-enabled/* \
    && ln -sf /dev/stdout /var/log/nginx/access.log \
    && ln -sf /dev/stderr /var/log/nginx/error.log
EXPOSE 8000
CMD ["nginx", "-g", "daemon off;"]
