# Stands in for the official `postgres:15` image in tests/api/compose.rs (no registry is
# reachable here): Debian's PostgreSQL 15 on the local base image, started by an entrypoint
# that keeps the official image's contract (POSTGRES_USER, _PASSWORD, _DB; data in
# /var/lib/postgresql/data; password authentication from the network).
FROM debian:bookworm-slim
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends postgresql-15 \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /var/lib/postgresql/data /var/run/postgresql \
    && chown -R postgres:postgres /var/lib/postgresql /var/run/postgresql
COPY postgres-entrypoint.sh /usr/local/bin/postgres-entrypoint.sh
ENV PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PGDATA=/var/lib/postgresql/data
# The official image runs as postgres too; its id is whatever Debian gave it.
# hadolint ignore=DL3066
USER postgres
EXPOSE 5432
ENTRYPOINT ["/usr/local/bin/postgres-entrypoint.sh"]
