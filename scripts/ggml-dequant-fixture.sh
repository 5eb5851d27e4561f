#!/usr/bin/env bash
# Regenerates fixtures/ggml-quants/dequant.bin from ggml's own dequantizers (see the .c file).
set -euo pipefail
cd "$(dirname "$0")/.."
lib=node_modules/@node-llama-cpp/linux-x64/bins/linux-x64
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cc -O2 -o "$tmp/gen" scripts/ggml-dequant-fixture.c -L"$lib" -l:libggml-base.so -Wl,-rpath,"$PWD/$lib"
mkdir -p fixtures/ggml-quants
"$tmp/gen" fixtures/ggml-quants/dequant.bin
sha256sum fixtures/ggml-quants/dequant.bin
