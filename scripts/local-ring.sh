#!/usr/bin/env bash
# Builds Chordal (installing what the build needs) and starts a local ring of
# five nodes on 127.0.0.1:10001-10005, printing the ring's state every few
# seconds. Ctrl-C stops every node. Extra arguments go to `chordal local`,
# e.g. scripts/local-ring.sh --nodes 8 -v
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
echo "building chordal (the first build compiles RocksDB: about 20 minutes on 2 cores)" >&2
cargo build --bin chordal
exec target/debug/chordal local --nodes 5 --fresh "$@"
