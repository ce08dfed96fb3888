#!/usr/bin/env bash
# Starts the stores Chordal is compared with, on loopback, from Debian's
# packages: a 3-member etcd cluster and a 3-master Redis Cluster.
#
#   scripts/other-stores.sh start [DIR]   # installs etcd-server, redis-server if missing
#   scripts/other-stores.sh status [DIR]
#   scripts/other-stores.sh stop [DIR]
#
# etcd clients: 127.0.0.1:23791, 23792, 23793 (peers on 23801-23803).
# Redis Cluster masters: 127.0.0.1:17001, 17002, 17003 (no replicas).
# Data and logs live in DIR (default: $XDG_DATA_HOME/chordal/other-stores).
set -euo pipefail

command="${1:-start}"
dir="${2:-${XDG_DATA_HOME:-$HOME/.local/share}/chordal/other-stores}"
etcd_ports=(23791 23792 23793)
redis_ports=(17001 17002 17003)

install_missing() {
    local missing=()
    command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
    command -v etcdctl >/dev/null 2>&1 || missing+=(etcd-client)
    command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
    [ ${#missing[@]} -eq 0 ] && return
    echo "installing: ${missing[*]}" >&2
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 || { echo "run as root or install sudo; needed: ${missing[*]}" >&2; exit 1; }
        sudo="sudo"
    fi
    export DEBIAN_FRONTEND=noninteractive
    # The packages start system-wide services; keep them from doing so.
    printf '#!/bin/sh\nexit 101\n' | $sudo tee /usr/sbin/policy-rc.d >/dev/null
    $sudo chmod +x /usr/sbin/policy-rc.d
    $sudo apt-get install -y --no-install-recommends "${missing[@]}" \
        || { $sudo apt-get update && $sudo apt-get install -y --no-install-recommends "${missing[@]}"; }
    $sudo rm -f /usr/sbin/policy-rc.d
}

wait_for() { # what, command...
    local what="$1"
    shift
    for _ in $(seq 1 100); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.2
    done
    echo "$what did not come up; see the logs in $dir" >&2
    exit 1
}

start() {
    install_missing
    mkdir -p "$dir"
    local cluster="" i
    for i in 0 1 2; do
        cluster+="${cluster:+,}etcd$i=http://127.0.0.1:$((23801 + i))"
    done
    for i in 0 1 2; do
        etcd --name "etcd$i" --data-dir "$dir/etcd$i" \
            --listen-client-urls "http://127.0.0.1:${etcd_ports[$i]}" \
            --advertise-client-urls "http://127.0.0.1:${etcd_ports[$i]}" \
            --listen-peer-urls "http://127.0.0.1:$((23801 + i))" \
            --initial-advertise-peer-urls "http://127.0.0.1:$((23801 + i))" \
            --initial-cluster "$cluster" --initial-cluster-state new \
            --initial-cluster-token chordal-compare \
            >"$dir/etcd$i.log" 2>&1 &
        echo $! >"$dir/etcd$i.pid"
    done
    local endpoints
    endpoints=$(printf '127.0.0.1:%s,' "${etcd_ports[@]}")
    wait_for "etcd" env ETCDCTL_API=3 etcdctl --endpoints "${endpoints%,}" endpoint health

    for i in 0 1 2; do
        mkdir -p "$dir/redis$i"
        redis-server --port "${redis_ports[$i]}" --bind 127.0.0.1 \
            --cluster-enabled yes --cluster-config-file "$dir/redis$i/nodes.conf" \
            --dir "$dir/redis$i" --appendonly yes --save "" \
            --daemonize no >"$dir/redis$i.log" 2>&1 &
        echo $! >"$dir/redis$i.pid"
        wait_for "redis on ${redis_ports[$i]}" redis-cli -p "${redis_ports[$i]}" ping
    done
    if ! redis-cli -p "${redis_ports[0]}" cluster info | grep -q 'cluster_state:ok'; then
        redis-cli --cluster create $(printf '127.0.0.1:%s ' "${redis_ports[@]}") \
            --cluster-replicas 0 --cluster-yes >"$dir/redis-create.log" 2>&1
    fi
    wait_for "the Redis Cluster" sh -c "redis-cli -p ${redis_ports[0]} cluster info | grep -q cluster_state:ok"
    status
}

status() {
    local endpoints
    endpoints=$(printf '127.0.0.1:%s,' "${etcd_ports[@]}")
    ETCDCTL_API=3 etcdctl --endpoints "${endpoints%,}" endpoint health 2>&1 | sed 's/^/etcd: /'
    redis-cli -p "${redis_ports[0]}" cluster info 2>&1 | grep -E 'cluster_state|cluster_known_nodes' | sed 's/^/redis: /'
}

stop() {
    local pidfile
    local pids=()
    for pidfile in "$dir"/*.pid; do
        [ -e "$pidfile" ] || continue
        pids+=("$(cat "$pidfile")")
        rm -f "$pidfile"
    done
    [ ${#pids[@]} -gt 0 ] && kill "${pids[@]}" 2>/dev/null || true
    # Wait for them to exit (ports free), then stop whatever is left.
    for _ in $(seq 1 50); do
        kill -0 "${pids[@]}" 2>/dev/null || break
        sleep 0.2
    done
    [ ${#pids[@]} -gt 0 ] && kill -9 "${pids[@]}" 2>/dev/null || true
    echo "stopped; data stays in $dir"
}

case "$command" in
start) start ;;
status) status ;;
stop) stop ;;
*) echo "usage: $0 start|status|stop [DIR]" >&2; exit 2 ;;
esac
