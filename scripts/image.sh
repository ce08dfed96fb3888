#!/usr/bin/env bash
# Builds the `chordal` container image without any registry: FROM scratch,
# holding the chordal binary and exactly the shared libraries it loads
# (as ldd lists them), nothing else.
#
#   scripts/image.sh            # builds chordal:latest
#   scripts/image.sh TAG        # builds chordal:TAG
#
# The binary is the one the tests use: cargo's dev profile, which here
# builds every dependency (RocksDB above all) with full optimisation and
# the chordal crate itself at opt-level 1. A release profile would compile
# RocksDB a second time for little gain; see Cargo.toml.
set -euo pipefail
cd "$(dirname "$0")/.."
tag="${1:-latest}"

command -v docker >/dev/null 2>&1 || { echo "docker is not installed" >&2; exit 1; }
# CHORDAL_BIN: a chordal binary already built (the tests pass theirs).
binary="${CHORDAL_BIN:-}"
if [ -z "$binary" ]; then
    scripts/install-deps.sh
    cargo build --bin chordal
    binary=target/debug/chordal
fi

context="${CHORDAL_IMAGE_DIR:-target/image}"
rm -rf "$context"
mkdir -p "$context/rootfs/data" "$context/rootfs/tmp"
cp "$binary" "$context/rootfs/chordal"
strip "$context/rootfs/chordal" 2>/dev/null || true
# Every library the dynamic loader would load, at the path it loads it
# from, and the loader itself.
ldd "$binary" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' |
    while read -r lib; do
        mkdir -p "$context/rootfs$(dirname "$lib")"
        cp -L "$lib" "$context/rootfs$lib"
    done
cat > "$context/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY rootfs/ /
ENV XDG_DATA_HOME=/data
EXPOSE 10001
ENTRYPOINT ["/chordal"]
DOCKERFILE
docker build --quiet -t "chordal:$tag" "$context" >/dev/null
echo "built chordal:$tag: $(du -sh "$context/rootfs" | cut -f1) ($(find "$context/rootfs" -type f | wc -l) files)"
