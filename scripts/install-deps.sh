#!/usr/bin/env bash
# Installs what building Chordal needs on Debian/Ubuntu and is missing:
# a C++ compiler and libclang (RocksDB's C++ sources and its Rust bindings),
# iproute2 for the test that cuts a node off in a network namespace, tmux
# for the test of the chat screen and Chromium for the dashboard's.
# Protobuf needs nothing: the .proto file is compiled in pure Rust (protox).
set -euo pipefail

if ! command -v cargo >/dev/null 2>&1; then
    cat >&2 <<'MSG'
Rust is not installed. Install it with rustup (https://rustup.rs):
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh
then open a new shell (or run: . "$HOME/.cargo/env") and run this again.
MSG
    exit 1
fi

missing=()
command -v c++ >/dev/null 2>&1 || missing+=(build-essential)
command -v clang >/dev/null 2>&1 || missing+=(clang)
if ! ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1 && ! ldconfig -p 2>/dev/null | grep -q libclang; then
    missing+=(libclang-dev)
fi
command -v kill >/dev/null 2>&1 || missing+=(procps)
# The partition test puts nodes in network namespaces (and skips without).
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
# The chat screen's test drives two terminals in tmux; the dashboard's is
# rendered by headless Chromium.
command -v tmux >/dev/null 2>&1 || missing+=(tmux)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)

if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]}" >&2
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 || { echo "run as root or install sudo; needed: ${missing[*]}" >&2; exit 1; }
        sudo="sudo"
    fi
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get install -y --no-install-recommends "${missing[@]}" \
        || { $sudo apt-get update && $sudo apt-get install -y --no-install-recommends "${missing[@]}"; }
fi
