# MariaDB from Debian's packages: our own instance (datadir under the stack
# dir, socket in .stack/run, 127.0.0.1:3306), binlog on (ROW, FULL row image),
# a unique server id; the three databases, seed rows (once) and CDC user from
# sql/. Sourced by stack/stack.sh; needs stack/lib.sh.
# shellcheck shell=bash

MARIADB_PORT="${OUTBOUND_MARIADB_PORT:-3306}"
MARIADB_SERVER_ID=184054
MARIADB_DATADIR="$STACK_DATA/mariadb"
MARIADB_SOCKET="$STACK_RUN/mariadb.sock"
MARIADB_CNF="$STACK_CONF/my.cnf"
MARIADB_SQL="$STACK_REPO/sql"
# The connector config is the one source of the CDC user, password and the
# connector's own replica server id.
MARIADB_CONNECTOR_JSON="$STACK_REPO/stack/config/debezium-mariadb.json"
# What Debezium needs, as MariaDB spells it in SHOW GRANTS (REPLICATION CLIENT
# is called BINLOG MONITOR since MariaDB 10.5).
MARIADB_CDC_GRANTS=("SELECT" "RELOAD" "SHOW DATABASES" "REPLICATION SLAVE" "BINLOG MONITOR")

# mariadb_root ARGS...: the mariadb client as root over our socket.
mariadb_root() {
  mariadb --no-defaults --socket="$MARIADB_SOCKET" -u root --batch --skip-column-names "$@"
}

mariadb_ping() { mariadb_root -e 'SELECT 1' >/dev/null 2>&1; }

# connector_setting KEY: a value from the Debezium connector config.
connector_setting() { jq -er --arg k "$1" '.[$k]' "$MARIADB_CONNECTOR_JSON"; }

mariadb_install() {
  apt_install mariadb mariadb-server mariadb-client
}

mariadb_status() {
  if is_running mariadb && mariadb_ping; then
    echo "mariadb: running (pid $(cat "$(pidfile mariadb)")) on 127.0.0.1:$MARIADB_PORT, server_id $MARIADB_SERVER_ID, log $(logfile mariadb)"
  else
    echo "mariadb: stopped"
    return 1
  fi
}

mariadb_start() {
  local lf; lf="$(logfile mariadb)"
  if is_running mariadb; then
    wait_until mariadb "mariadbd to accept connections on $MARIADB_SOCKET" 60 mariadb_ping
    log "mariadb: already running (pid $(cat "$(pidfile mariadb)"))"
    mariadb_check_cdc
    return 0
  fi
  require_free_port mariadb "$MARIADB_PORT"
  render_template "$STACK_REPO/stack/config/my.cnf" "$MARIADB_CNF" \
    "MARIADB_PORT=$MARIADB_PORT" "MARIADB_SERVER_ID=$MARIADB_SERVER_ID"

  if [ ! -f "$MARIADB_DATADIR/.outbound-installed" ]; then
    log "mariadb: initializing a new datadir in $MARIADB_DATADIR"
    rm -rf "$MARIADB_DATADIR"
    mkdir -p "$MARIADB_DATADIR"
    if ! mariadb-install-db --defaults-file="$MARIADB_CNF" --user=root \
          --auth-root-authentication-method=socket --skip-test-db >>"$lf" 2>&1; then
      fail mariadb "mariadb-install-db could not initialize $MARIADB_DATADIR" "$lf"
    fi
    touch "$MARIADB_DATADIR/.outbound-installed"
  fi

  log "mariadb: starting mariadbd on 127.0.0.1:$MARIADB_PORT"
  start_process mariadb mariadbd --defaults-file="$MARIADB_CNF"
  wait_until mariadb "mariadbd to accept connections on $MARIADB_SOCKET" 60 mariadb_ping

  if [ ! -f "$MARIADB_DATADIR/.outbound-seeded" ]; then
    local f
    for f in 01_schema.sql 02_seed.sql 03_grants.sql; do
      log "mariadb: loading sql/$f"
      if ! mariadb_root <"$MARIADB_SQL/$f" >>"$lf" 2>&1; then
        fail mariadb "loading sql/$f failed" "$lf"
      fi
    done
    touch "$MARIADB_DATADIR/.outbound-seeded"
  fi
  mariadb_check_cdc
}

mariadb_stop() {
  stop_process mariadb 60
}

# mariadb_check_cdc: the three classic reasons Debezium gets nothing from a
# MySQL-family server, checked against the running server; fails loudly.
#   1. binlog off / wrong format: SHOW VARIABLES log_bin, binlog_format,
#      binlog_row_image must be ON, ROW, FULL;
#   2. missing grants: SHOW GRANTS for the CDC user must include SELECT, RELOAD,
#      SHOW DATABASES, REPLICATION SLAVE, REPLICATION CLIENT (BINLOG MONITOR),
#      and the CDC user must be able to log in over TCP as the connector does;
#   3. duplicate server id: the server's server_id must differ from the
#      connector's database.server.id (a replica with the server's own id is
#      refused), and no other connector in Connect may use the same id.
mariadb_check_cdc() {
  local lf; lf="$(logfile mariadb)"
  local vars log_bin fmt image server_id
  vars="$(mariadb_root -e "SHOW GLOBAL VARIABLES WHERE Variable_name IN ('log_bin','binlog_format','binlog_row_image','server_id')" 2>&1)" \
    || fail mariadb "cannot query the server's variables: $vars" "$lf"
  log_bin="$(awk '$1=="log_bin"{print $2}' <<<"$vars")"
  fmt="$(awk '$1=="binlog_format"{print $2}' <<<"$vars")"
  image="$(awk '$1=="binlog_row_image"{print $2}' <<<"$vars")"
  server_id="$(awk '$1=="server_id"{print $2}' <<<"$vars")"
  if [ "$log_bin" != "ON" ]; then
    fail mariadb "CDC: the binary log is off (log_bin=$log_bin); Debezium reads changes from the binlog. Set log_bin in $MARIADB_CNF (template stack/config/my.cnf) and restart" "$lf"
  fi
  if [ "$fmt" != "ROW" ] || [ "$image" != "FULL" ]; then
    fail mariadb "CDC: binlog_format=$fmt binlog_row_image=$image, Debezium needs binlog_format=ROW and binlog_row_image=FULL (stack/config/my.cnf)" "$lf"
  fi

  local user password cdc_id
  user="$(connector_setting database.user)" || fail mariadb "no database.user in $MARIADB_CONNECTOR_JSON" ""
  password="$(connector_setting database.password)" || fail mariadb "no database.password in $MARIADB_CONNECTOR_JSON" ""
  cdc_id="$(connector_setting database.server.id)" || fail mariadb "no database.server.id in $MARIADB_CONNECTOR_JSON" ""

  local grants missing=() g
  grants="$(mariadb_root -e "SHOW GRANTS FOR '$user'@'%'" 2>&1)" \
    || fail mariadb "CDC: the CDC user '$user'@'%' does not exist ($grants); create it with sql/03_grants.sql" "$lf"
  local global; global="$(grep -E " ON \*\.\* TO " <<<"$grants" | sed -E 's/^GRANT (.*) ON \*\.\* TO .*/\1/')"
  if ! grep -q 'ALL PRIVILEGES' <<<"$global"; then
    for g in "${MARIADB_CDC_GRANTS[@]}"; do
      grep -Eq "(^|, )$g(,|$)" <<<"$global" || missing+=("$g")
    done
  fi
  if [ ${#missing[@]} -gt 0 ]; then
    fail mariadb "CDC: the CDC user '$user' lacks $(IFS=,; echo "${missing[*]}") ON *.* (has: ${global:-nothing}); Debezium needs SELECT, RELOAD, SHOW DATABASES, REPLICATION SLAVE, REPLICATION CLIENT: see sql/03_grants.sql" "$lf"
  fi

  local out
  if ! out="$(mariadb --no-defaults --protocol=TCP -h 127.0.0.1 -P "$MARIADB_PORT" -u "$user" -p"$password" \
        --batch --skip-column-names -e 'SHOW MASTER STATUS' 2>&1)"; then
    fail mariadb "CDC: MariaDB refuses the CDC user '$user' over TCP as the connector logs in: $out" "$lf"
  fi
  if [ -z "$out" ]; then
    fail mariadb "CDC: SHOW MASTER STATUS as '$user' returns no binlog position (binlog off or no BINLOG MONITOR)" "$lf"
  fi

  if [ "$server_id" = "$cdc_id" ]; then
    fail mariadb "CDC: duplicate server id: MariaDB's server_id and the connector's database.server.id are both $server_id; every replica (Debezium is one) needs its own id (stack/config/my.cnf vs $MARIADB_CONNECTOR_JSON)" "$lf"
  fi
  # Other Debezium connectors in our Connect worker using the same replica id
  # would kick each other off the binlog.
  if declare -F connect_other_connectors_with_server_id >/dev/null; then
    local others; others="$(connect_other_connectors_with_server_id "$cdc_id")"
    if [ -n "$others" ]; then
      fail mariadb "CDC: duplicate server id: connector(s) $others in Kafka Connect also use database.server.id=$cdc_id; give each connector its own id" "$lf"
    fi
  fi
}
