#!/usr/bin/env bash
# CI for the builds of the native addon that `npm install` does not make (issue 11.1): each variant
# is compiled in its own folder under .tmp/native-variants/ (./build is never touched) and the
# native op tests run against it through QLORA_ADDON=<its qlora_native.node>.
#   asan    -fsanitize=address,undefined (QLORA_SANITIZE): the op tests and a short training run,
#           with the sanitizer runtime preloaded into node (detect_leaks=0: V8 keeps memory to exit)
#   avx2    QLORA_MARCH=haswell: the op tests (x86-64 with AVX2+FMA only)
#   scalar  QLORA_MARCH=x86-64 (no AVX at all): the op tests (x86-64 only)
# Usage: scripts/native-variants.sh [variant...]   (default: all; run by `npm run test:native-variants`)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=$ROOT/.tmp/native-variants
OP_TESTS=(test/cpu-ops.test.ts test/cpu-matmul.test.ts test/cpu-quant4bit.test.ts test/embedding4bit.test.ts
  test/quantize-native.test.ts test/tensor.test.ts test/native-memory-limits.test.ts test/ops-gelu.test.ts
  test/ops-attention.test.ts test/ops-loss.test.ts test/ops-elementwise.test.ts test/ops-norm-rope.test.ts
  test/ggml-kernels.test.ts)
# The parameterized op suites (ops-*.test.ts) run on the cpu backend only here: the variant is the addon.
export QLORA_TEST_BACKENDS=cpu

variants=("$@")
if [ ${#variants[@]} -eq 0 ]; then
  variants=(asan)
  if [ "$(uname -m)" = x86_64 ]; then
    if grep -qw avx2 /proc/cpuinfo && grep -qw fma /proc/cpuinfo; then variants+=(avx2); else echo "native-variants: no AVX2+FMA on this CPU, skipping avx2"; fi
    variants+=(scalar)
  else
    echo "native-variants: $(uname -m) is not x86-64, skipping the avx2 and scalar variants"
  fi
fi

# Builds variant $1 with the environment in $2.. (node-gyp in a folder holding links to the sources).
build() {
  local name=$1; shift
  local dir=$OUT/$name
  mkdir -p "$dir"
  ln -sfn "$ROOT/native" "$dir/native"
  ln -sfn "$ROOT/node_modules" "$dir/node_modules"
  cp "$ROOT/binding.gyp" "$dir/binding.gyp"
  # Through npm (as `npm install` runs it), so npm's settings such as nodedir reach node-gyp.
  if ! (cd "$dir" && env "$@" npm exec --offline --no -- node-gyp rebuild -j "$(nproc)" >"$dir/build.log" 2>&1); then
    tail -40 "$dir/build.log"
    echo "native-variants: building $name failed (log: $dir/build.log)" >&2
    return 1
  fi
}

addon() { echo "$OUT/$1/build/Release/qlora_native.node"; }

# The variant really is what it claims: the addon reports the instruction set it was compiled for.
expect_simd() {
  local got
  got=$(QLORA_ADDON=$(addon "$1") node --import tsx --input-type=module \
    -e "const { native } = await import('$ROOT/src/backends/cpu/native.ts'); console.log(native.simdLevel());")
  if [ "$got" != "$2" ]; then echo "native-variants: $1 build reports simd '$got', expected '$2'" >&2; return 1; fi
}

# Each variant reports its wall time and the CPU time of everything it ran (builds and tests).
TIMEFORMAT="native-variants: %R s wall, %U s user + %S s sys CPU"
start=$(date +%s)
for v in "${variants[@]}"; do
  echo "native-variants: $v"
  time {
    case $v in
      asan)
        build asan QLORA_SANITIZE=address,undefined
        runtime=$(ldd "$(addon asan)" | awk '/libasan/ { print $3 }')
        if [ -z "$runtime" ]; then echo "native-variants: the asan build does not link libasan dynamically" >&2; exit 1; fi
        export_env=(QLORA_ADDON="$(addon asan)" LD_PRELOAD="$runtime"
          ASAN_OPTIONS=detect_leaks=0:abort_on_error=0:exitcode=86 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1)
        env "${export_env[@]}" node --import tsx --test "${OP_TESTS[@]}"
        # A short training run (the demo model and data) through every training kernel, with an eval,
        # a checkpoint and the final save.
        train_out=$OUT/asan/train-run
        rm -rf "$train_out"
        env "${export_env[@]}" node --import tsx src/cli/run.ts train --output "$train_out" --max-steps 3 --seq-len 96 \
          --batch-size 3 --eval-every 2 --eval-batches 1 --save-every 2 >"$OUT/asan/train.log" 2>&1 ||
          { tail -60 "$OUT/asan/train.log"; echo "native-variants: the training run under ASan+UBSan failed" >&2; exit 1; }
        test -f "$train_out/adapter_model.safetensors"
        echo "native-variants: training run under ASan+UBSan ok ($(grep -c . "$OUT/asan/train.log") log lines)"
        ;;
      avx2)
        build avx2 QLORA_MARCH=haswell
        expect_simd avx2 avx2
        QLORA_ADDON=$(addon avx2) node --import tsx --test "${OP_TESTS[@]}"
        ;;
      scalar)
        build scalar QLORA_MARCH=x86-64
        expect_simd scalar scalar
        QLORA_ADDON=$(addon scalar) node --import tsx --test "${OP_TESTS[@]}"
        ;;
      *)
        echo "native-variants: unknown variant '$v' (asan, avx2, scalar)" >&2
        exit 2
        ;;
    esac
  }
  echo "native-variants: $v ok"
done
echo "native-variants: ${variants[*]} ok in $(($(date +%s) - start)) s"
