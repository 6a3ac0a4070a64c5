#!/usr/bin/env bash
# Builds the Kafka Streams baseline: resolves its jars from Maven Central
# (cached in ~/.m2) into target/deps and compiles the sources into
# target/classes with javac (no Maven build plugins to download). Idempotent:
# skips what is up to date. Prints the classpath to run it with:
#   java -cp "$(benches/kafka-streams/build.sh)" dev.outbound.kstreams.App --app-id ... 
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="$here/target"
log="$out/build.log"
mkdir -p "$out"
for tool in mvn javac; do
  command -v "$tool" >/dev/null || { echo "kafka-streams baseline: $tool not found (Debian: maven, openjdk-17-jdk-headless)" >&2; exit 1; }
done
stamp="$out/deps/.pom.sha256"
want="$(sha256sum "$here/pom.xml" | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  rm -rf "$out/deps"
  if ! mvn -B -q -f "$here/pom.xml" dependency:copy-dependencies \
      -DoutputDirectory="$out/deps" -DincludeScope=runtime >"$log" 2>&1; then
    echo "kafka-streams baseline: Maven could not resolve the jars; see $log" >&2
    exit 1
  fi
  echo "$want" >"$stamp"
fi
sources=$(find "$here/src/main/java" -name '*.java')
newest_source=$(ls -t $sources | head -1)
if [ ! -f "$out/classes/.built" ] || [ "$newest_source" -nt "$out/classes/.built" ] || [ "$stamp" -nt "$out/classes/.built" ]; then
  rm -rf "$out/classes"
  mkdir -p "$out/classes"
  # shellcheck disable=SC2086
  if ! javac --release 17 -Xlint:all -Xlint:-processing -Werror -d "$out/classes" -cp "$out/deps/*" $sources >"$log" 2>&1; then
    echo "kafka-streams baseline: javac failed; see $log" >&2
    cat "$log" >&2
    exit 1
  fi
  touch "$out/classes/.built"
fi
echo "$out/classes:$out/deps/*"
