"""PyTorch + PEFT LoRA training baseline on a CUDA GPU, at the shapes bench/gpu-train.ts measures.

Random-weight LlamaForCausalLM from the shape's config (bf16 weights), PEFT LoRA r 16 on all
linear layers, AdamW, synthetic tokens. No bitsandbytes on the GPU machine's image, so the frozen
base is plain bf16 (not NF4): the comparison favours PyTorch on memory and speed.

    python3 bench/torch_lora.py --shapes tinyllama,llama2-7b --steps 5 > bench/results/gpu-torch.json
"""
import argparse
import json
import time

import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

SHAPES = {
    "15m": dict(hidden_size=288, intermediate_size=768, num_hidden_layers=6, num_attention_heads=6, num_key_value_heads=6, vocab_size=32000, batch=4, seq=256),
    "110m": dict(hidden_size=768, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=12, num_key_value_heads=12, vocab_size=32000, batch=4, seq=256),
    "tinyllama": dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32, num_key_value_heads=4, vocab_size=32000, batch=4, seq=512),
    "llama2-7b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32, vocab_size=32000, batch=1, seq=512),
}


def run(key, steps, dtype):
    s = dict(SHAPES[key])
    batch, seq = s.pop("batch"), s.pop("seq")
    cfg = LlamaConfig(**s, max_position_embeddings=2048, rms_norm_eps=1e-5, tie_word_embeddings=False)
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = LlamaForCausalLM(cfg).to(dtype)
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM"))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    ids = torch.randint(0, cfg.vocab_size, (batch, seq), device="cuda")
    torch.cuda.reset_peak_memory_stats()
    times = []
    for step in range(steps + 1):
        torch.cuda.synchronize()
        t = time.perf_counter()
        out = model(input_ids=ids, labels=ids)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        if step > 0:
            times.append(time.perf_counter() - t)
    mean = sum(times) / len(times)
    result = dict(key=key, batchSize=batch, seqLen=seq, dtype=str(dtype), trainTokensPerSecond=batch * seq / mean,
                  peakDeviceBytes=torch.cuda.max_memory_allocated(), loss=float(out.loss))
    del model, opt
    torch.cuda.empty_cache()
    return result


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", default="tinyllama,llama2-7b")
    ap.add_argument("--steps", type=int, default=5)
    args = ap.parse_args()
    rows = []
    for key in args.shapes.split(","):
        for dtype in (torch.bfloat16, torch.float32):
            rows.append(run(key, args.steps, dtype))
    print(json.dumps(dict(device=torch.cuda.get_device_name(0), torch=torch.__version__, rows=rows), indent=2))


if __name__ == "__main__":
    main()
