# Sourced by the mysql image's entrypoint on the first start (empty data
# directory), from /docker-entrypoint-initdb.d. Loads the repo's numbered SQL
# files (mounted at /sql) in order: schemas, seed rows, CDC grants. The other
# files in sql/ (the seed update, reconcile's batch queries) are not setup and
# are not run here.
for f in /sql/[0-9]*.sql; do
  mysql_note "outbound: loading $f"
  docker_process_sql < "$f"
done
