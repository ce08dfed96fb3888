#!/usr/bin/env bash
# Fault drills on the compose ring (docker-compose up -d first):
#
#   scripts/drill.sh kill [SERVICE]         # kill -9 a container under write load, start it again
#   scripts/drill.sh restart [SERVICE]      # stop and start one
#   scripts/drill.sh disconnect [SERVICE]   # cut one off the network for 5 s, reconnect it
#
# While the drill runs, keys are written through bootstrap's published
# client port (asked of `docker-compose port`); afterwards the drill checks
# that writes were acknowledged after the fault began, that the ring is one
# closed, ordered ring of every member of every running process, and that
# every write acknowledged during it reads back. SERVICE defaults to
# node-3; it may not be the bootstrap, which the writes go through.
#
# It drives whatever compose project docker-compose would: the
# repository's docker-compose.yml by default, another through
# COMPOSE_FILE and COMPOSE_PROJECT_NAME (docker-compose's own variables;
# tests/docker.rs runs this script that way). CHORDAL_BIN names the client
# binary (default target/debug/chordal, built if missing).
set -euo pipefail
# A relative CHORDAL_BIN means relative to where the script was run from.
chordal="${CHORDAL_BIN:-}"
case "$chordal" in ""|/*) ;; *) chordal="$PWD/$chordal" ;; esac
cd "$(dirname "$0")/.."
chordal="${chordal:-target/debug/chordal}"
drill="${1:-}"
service="${2:-node-3}"
case "$drill" in kill|restart|disconnect) ;; *)
    echo "usage: scripts/drill.sh kill|restart|disconnect [SERVICE]" >&2; exit 2 ;;
esac
[ "$service" != bootstrap ] || { echo "the writes go through bootstrap: pick another service" >&2; exit 2; }
[ -x "$chordal" ] || [ -n "${CHORDAL_BIN:-}" ] || cargo build --bin chordal
[ -x "$chordal" ] || { echo "no chordal binary at $chordal" >&2; exit 1; }
container="$(docker-compose ps -q "$service")"
[ -n "$container" ] || { echo "$service is not running: docker-compose up -d first" >&2; exit 1; }
via="$(docker-compose port bootstrap 10001 2>/dev/null || true)"
case "$via" in *:[0-9]*) ;; *) echo "bootstrap publishes no client port: docker-compose up -d first" >&2; exit 1 ;; esac

acked="$(mktemp)"
trap 'kill "$writer" 2>/dev/null || true; rm -f "$acked"' EXIT
(
    i=0
    while true; do
        key="drill-$drill-$$-$i"
        if "$chordal" put "$key" "$key" --via "$via" --timeout 5s 2>/dev/null; then
            echo "$key" >>"$acked"
        fi
        i=$((i + 1))
    done
) &
writer=$!
sleep 2
before="$(wc -l <"$acked")"
echo "drill $drill on $service, writes going on through $via"
case "$drill" in
    kill) docker-compose kill "$service"; sleep 3; docker-compose start "$service" ;;
    restart) docker-compose stop "$service"; sleep 1; docker-compose start "$service" ;;
    disconnect)
        network="$(docker inspect -f '{{range $name, $_ := .NetworkSettings.Networks}}{{$name}} {{end}}' "$container" | awk '{print $1}')"
        docker network disconnect "$network" "$container"
        sleep 5
        docker network connect --alias "$service" "$network" "$container" ;;
esac
sleep 3
kill "$writer" 2>/dev/null || true
wait "$writer" 2>/dev/null || true
written="$(wc -l <"$acked")"
during=$((written - before))
echo "$written writes acknowledged, $during of them after the fault began; checking the ring and every one of them"
[ "$during" -gt 0 ] || { echo "FAILED: no write was acknowledged after the fault began" >&2; exit 1; }

# One ring again means every member of every running process in it
# (CHORDAL_VNODES each, 4 as in docker-compose.yml), closed and ordered.
processes="$(docker-compose ps -q | wc -l)"
whole="$((processes * ${CHORDAL_VNODES:-4})) members on $processes processes, closed and ordered"
for _ in $(seq 60); do
    summary="$(docker-compose exec -T bootstrap /chordal ring --via bootstrap:10001 --summary 2>/dev/null || true)"
    case "$summary" in *"$whole"*) break ;; esac
    sleep 1
done
echo "$summary"
case "$summary" in *"$whole"*) ;; *) echo "FAILED: not one ordered ring of $whole" >&2; exit 1 ;; esac

lost=0
while read -r key; do
    value=""
    for _ in 1 2 3 4 5; do
        value="$("$chordal" get "$key" --via "$via" 2>/dev/null || true)"
        [ "$value" = "$key" ] && break
        sleep 1
    done
    if [ "$value" != "$key" ]; then
        echo "lost: $key" >&2
        lost=$((lost + 1))
    fi
done <"$acked"
if [ "$lost" -gt 0 ]; then
    echo "FAILED: $lost acknowledged writes lost" >&2
    exit 1
fi
echo "passed: every acknowledged write reads back"
