#!/usr/bin/env bash
# One-shot WebGPU check and benchmark on a rented NVIDIA GPU machine (H100/H200; offline, root,
# CUDA + PyTorch image, maybe no Node and no Vulkan loader). Sets up what is missing from .gpu/
# (bench/gpu-prepare.sh makes it on the dev machine), then:
#   1. the webgpu op tests on the real adapter (webgpu only: the cpu addon is built for the dev CPU;
#      the GGUF-block kernels' suite too),
#   2. PyTorch fp32 (TF32 off) and bf16 matmul on the bench's shapes (bench/torch_matmul.py),
#   3. bench/gpu.ts: fp32 matmul, NF4 and GGUF-block (Q4_K, Q8_0) matmul GFLOP/s, % of the FP32
#      peak (SMs × 128 lanes × 2 × max SM clock, read from the machine), PyTorch alongside,
#   4. with --train: QLoRA training tok/s (bench/gpu-train.ts) and PyTorch + PEFT (bench/torch_lora.py).
# Everything lands in $OUT (the device tool's folder; bench/results/gpu-run otherwise).
#
# From the dev machine, after landing:  bash bench/gpu-prepare.sh, then the device tool's
#   run(command: "bash bench/gpu.sh", carry: [".gpu"], timeout_s: 600)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-bench/results/gpu-run}"
mkdir -p "$OUT"
exec > >(tee "$OUT/run.log") 2>&1
step() { printf '\n== %s (%s)\n' "$1" "$(date -u +%T)"; }

step 'Node'
if ! command -v node >/dev/null 2>&1; then
  [ -f .gpu/node.xz ] || { echo "no node and no .gpu/node.xz (run bench/gpu-prepare.sh, carry .gpu)"; exit 1; }
  mkdir -p /tmp/gpu-node/bin
  xz -dc .gpu/node.xz >/tmp/gpu-node/bin/node && chmod +x /tmp/gpu-node/bin/node
  export PATH="/tmp/gpu-node/bin:$PATH"
fi
echo "node $(node -v) at $(command -v node)"
if [ ! -f node_modules/webgpu/dist/linux-x64/dawn.node ]; then
  [ -f .gpu/node_modules.tar.xz ] || { echo "no node_modules and no .gpu/node_modules.tar.xz"; exit 1; }
  tar -xJf .gpu/node_modules.tar.xz
fi

step 'Vulkan'
if ! ldconfig -p | grep -q 'libvulkan.so.1'; then
  for f in .gpu/*.deb; do dpkg -x "$f" /; done
  ldconfig
fi
if ! ls /usr/share/vulkan/icd.d/nvidia*.json /etc/vulkan/icd.d/nvidia*.json >/dev/null 2>&1; then
  for f in /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json /usr/local/nvidia/icd.d/nvidia_icd.json; do
    [ -f "$f" ] && export VK_DRIVER_FILES="$f" && break
  done
fi
echo "VK_DRIVER_FILES=${VK_DRIVER_FILES:-<loader default>}"
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,memory.total --format=csv | tee "$OUT/nvidia-smi.csv"
node --import tsx --input-type=module -e "
  const { listAdapters } = await import('./src/backends/webgpu/gpu.ts');
  const list = await listAdapters();
  for (const a of list) console.log(a.vendor, '|', a.description, '| fallback', a.isFallback, '| f16', a.features.includes('shader-f16'), '| binding', a.limits.maxStorageBufferBindingSize);
  if (!list.some((a) => !a.isFallback)) { console.error('no hardware WebGPU adapter'); process.exit(1); }
" || exit 1

step 'webgpu op tests on the GPU'
QLORA_REQUIRE_WEBGPU=1 QLORA_TEST_BACKENDS=webgpu timeout 240 node --import tsx --test test/ops-*.test.ts test/webgpu-ggml.test.ts >"$OUT/ops-tests.log" 2>&1
echo "op tests exit $?: $(grep -E '^# (pass|fail)' "$OUT/ops-tests.log" | tr '\n' ' ')"
grep -E '^not ok' "$OUT/ops-tests.log" | head -20

step 'PyTorch matmul baseline'
PYTHONUNBUFFERED=1 timeout 120 python3 bench/torch_matmul.py >"$OUT/gpu-torch-matmul.json" || echo "torch baseline failed"
# FP32 peak: SMs × 128 FP32 lanes (Ampere/Hopper) × 2 (FMA) × max SM clock.
PEAK=$(python3 - <<'EOF'
import subprocess, torch
sms = torch.cuda.get_device_properties(0).multi_processor_count
mhz = float(subprocess.check_output(["nvidia-smi", "--query-gpu=clocks.max.sm", "--format=csv,noheader,nounits"]).split()[0])
print(f"{sms * 128 * 2 * mhz * 1e6 / 1e12:.1f}")
EOF
)
echo "FP32 peak ${PEAK:-?} TFLOP/s"

step 'bench/gpu.ts'
timeout 300 node --import tsx bench/gpu.ts ${PEAK:+--peak-tflops "$PEAK"} --torch "$OUT/gpu-torch-matmul.json"
cp bench/results/gpu-latest.json bench/results/gpu-latest.md "$OUT/" 2>/dev/null

if [ "${1:-}" = --train ] && [ -f bench/gpu-train.ts ]; then
  step 'QLoRA training (webgpu) and PyTorch + PEFT'
  timeout 240 node --import tsx bench/gpu-train.ts --only tinyllama,llama2-7b --steps 3 && cp bench/results/gpu-train-latest.md "$OUT/"
  PYTHONUNBUFFERED=1 timeout 180 python3 bench/torch_lora.py --shapes tinyllama,llama2-7b --steps 5 >"$OUT/gpu-torch-lora.json"
fi
step done
