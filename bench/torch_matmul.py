"""PyTorch matmul baseline for bench/gpu.ts: the same shapes (square 1024/2048/4096 as A·B, and
M = 2048 tokens × K, N in {4096, 11008} as x·Wᵀ) in true fp32 (TF32 off) and bf16, on CUDA.

    python3 bench/torch_matmul.py [--scale 1] > bench/results/gpu-torch-matmul.json

Timing: CUDA events around 20 calls after 3 warm-ups; TFLOP/s = 2·M·N·K / time.
"""
import argparse
import json

import torch


def bench(M, N, K, dtype, trans_b):
    a = torch.randn(M, K, device="cuda", dtype=dtype)
    b = torch.randn(N, K, device="cuda", dtype=dtype) if trans_b else torch.randn(K, N, device="cuda", dtype=dtype)
    f = (lambda: a @ b.t()) if trans_b else (lambda: a @ b)
    for _ in range(3):
        f()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    iters = 20
    start.record()
    for _ in range(iters):
        f()
    end.record()
    torch.cuda.synchronize()
    ms = start.elapsed_time(end) / iters
    return 2 * M * N * K / (ms / 1e3) / 1e12


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--scale", type=float, default=1)
    args = p.parse_args()
    s = lambda n: max(1, round(n / args.scale))
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    shapes = [(s(n), s(n), s(n), False) for n in (1024, 2048, 4096)]
    shapes += [(s(2048), s(N), s(K), True) for K, N in ((4096, 4096), (4096, 11008), (11008, 4096), (11008, 11008))]
    rows = []
    for M, N, K, trans_b in shapes:
        for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
            rows.append(dict(M=M, N=N, K=K, dtype=name, transB=trans_b, tflops=bench(M, N, K, dtype, trans_b)))
    props = torch.cuda.get_device_properties(0)
    print(json.dumps(dict(device=props.name, sms=props.multi_processor_count, torch=torch.__version__, rows=rows), indent=2))


if __name__ == "__main__":
    main()
