#!/bin/sh
# Entrypoint of the outbound image. Each instance needs an id that is unique
# among the replicas and stable across restarts of the same container (the
# transactional id is <app_id>-<instance_id>, so a restarted instance fences
# its previous incarnation): default it to the container's hostname, which
# Docker keeps for the life of the container.
set -eu
: "${OUTBOUND_INSTANCE_ID:=$(hostname)}"
export OUTBOUND_INSTANCE_ID
exec "$@"
