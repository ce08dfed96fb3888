#!/usr/bin/env bash
# Runs the whole test suite: unit and property tests, the simulator's
# scenarios, and real chordal processes on loopback. Installs what the build
# needs first.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo test "$@"
