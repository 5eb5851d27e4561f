#!/usr/bin/env python3
"""Regenerates fixtures/gemma/: tiny random Gemma 2 and Gemma 3 checkpoints written by Hugging Face
transformers itself, with the logits transformers computes for a fixed token sequence and the
adapter key names HF PEFT writes for them. The repository's tests read only the files this writes;
they never need Python. Run it (from the repository root) with torch, transformers, safetensors and
peft installed:

    python scripts/gemma-reference.py [--out fixtures/gemma]

Each model keeps its family's structure at a tiny size: (1 + w) RMSNorm everywhere (with random
norm weights, since transformers initializes them to zero and that would hide the + 1), pre- and
post-norms around attention and MLP, GeGLU with tanh GELU, embeddings scaled by sqrt(hidden),
tied embeddings, the sliding / global layer pattern with a window shorter than the sequence,
Gemma 2's attention and final-logit soft-caps, Gemma 3's q/k norms and two rope bases (and linear
rope scaling on its global layers, as gemma-3-4b has). Weights are drawn large enough that
attention scores and logits reach the soft-caps' curved range.
"""
import argparse
import json
import os
import platform

import torch
import transformers
from safetensors.torch import save_file

SEQ = [2, 17, 200, 31, 5, 99, 250, 7, 64, 128, 3, 45, 200, 17, 8, 190, 33, 71, 12, 240, 5, 88]

CONFIGS = {
    # google/gemma-2-2b's config.json (fixtures/model-configs/gemma-2-2b.json) at a tiny size. The
    # query_pre_attn_scalar differs from head_dim here so a model that scales by 1/sqrt(head_dim)
    # fails this fixture.
    "gemma2-tiny": {
        "architectures": ["Gemma2ForCausalLM"],
        "model_type": "gemma2",
        "attention_bias": False,
        "attention_dropout": 0.0,
        "attn_logit_softcapping": 50.0,
        "bos_token_id": 2,
        "eos_token_id": 1,
        "pad_token_id": 0,
        "final_logit_softcapping": 30.0,
        "head_dim": 16,
        "hidden_act": "gelu_pytorch_tanh",
        "hidden_activation": "gelu_pytorch_tanh",
        "hidden_size": 32,
        "initializer_range": 0.02,
        "intermediate_size": 48,
        "max_position_embeddings": 8192,
        "num_attention_heads": 2,
        "num_hidden_layers": 4,
        "num_key_value_heads": 1,
        "query_pre_attn_scalar": 24,
        "rms_norm_eps": 1e-06,
        "rope_theta": 10000.0,
        "sliding_window": 6,
        "torch_dtype": "float32",
        "vocab_size": 256,
    },
    # google/gemma-3-1b-pt's config.json (fixtures/model-configs/gemma-3-1b.json) at a tiny size, with
    # gemma-3-4b's linear rope scaling (factor 8) so that it is seen to apply to global layers only.
    "gemma3-tiny": {
        "architectures": ["Gemma3ForCausalLM"],
        "model_type": "gemma3_text",
        "attention_bias": False,
        "attention_dropout": 0.0,
        "attn_logit_softcapping": None,
        "bos_token_id": 2,
        "eos_token_id": 1,
        "pad_token_id": 0,
        "final_logit_softcapping": None,
        "head_dim": 16,
        "hidden_activation": "gelu_pytorch_tanh",
        "hidden_size": 32,
        "initializer_range": 0.02,
        "intermediate_size": 48,
        "max_position_embeddings": 32768,
        "num_attention_heads": 2,
        "num_hidden_layers": 7,
        "num_key_value_heads": 1,
        "query_pre_attn_scalar": 16,
        "rms_norm_eps": 1e-06,
        "rope_local_base_freq": 10000.0,
        "rope_scaling": {"factor": 8.0, "rope_type": "linear"},
        "rope_theta": 1000000.0,
        "sliding_window": 6,
        "sliding_window_pattern": 6,
        "torch_dtype": "float32",
        "vocab_size": 256,
    },
}


def randomize(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if name.endswith("norm.weight"):
                # w in (1 + w): around 0, so the scale stays near 1 and a missing + 1 is glaring.
                p.copy_(0.3 * torch.randn(p.shape, generator=g))
            elif "embed_tokens" in name:
                p.copy_(torch.randn(p.shape, generator=g))
            else:
                fan_in = p.shape[-1]
                p.copy_(torch.randn(p.shape, generator=g) * (2.5 / fan_in**0.5))


def peft_keys(model):
    """The tensor names PEFT writes for LoRA on every linear projection of the model."""
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict

    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    peft_model = get_peft_model(model, LoraConfig(r=2, lora_alpha=4, target_modules=targets))
    import peft

    return peft.__version__, sorted(get_peft_model_state_dict(peft_model).keys())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="fixtures/gemma")
    args = ap.parse_args()
    torch.set_num_threads(1)
    for i, (name, cfg) in enumerate(CONFIGS.items()):
        folder = os.path.join(args.out, name)
        os.makedirs(folder, exist_ok=True)
        config = transformers.AutoConfig.for_model(**cfg)
        config._attn_implementation = "eager"
        model = transformers.AutoModelForCausalLM.from_config(config, torch_dtype=torch.float32)
        model.eval()
        randomize(model, 1000 + i)
        # The checkpoint as HF writes it: tied lm_head omitted, f32.
        state = {k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}
        save_file(state, os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})
        with open(os.path.join(folder, "config.json"), "w") as f:
            json.dump(cfg, f, indent=2)
            f.write("\n")
        ids = torch.tensor([SEQ])
        with torch.no_grad():
            logits = model(input_ids=ids, use_cache=False).logits[0].float()
        version, keys = peft_keys(model)
        reference = {
            "provenance": {
                "script": "scripts/gemma-reference.py",
                "transformers": transformers.__version__,
                "torch": torch.__version__,
                "peft": version,
                "python": platform.python_version(),
                "class": type(model).__name__,
                "attn_implementation": "eager",
            },
            "input_ids": SEQ,
            "logits": [[float(v) for v in row] for row in logits],
            "peft_keys": keys,
        }
        with open(os.path.join(folder, "reference.json"), "w") as f:
            json.dump(reference, f)
            f.write("\n")
        print(f"{folder}: {type(model).__name__}, logits {tuple(logits.shape)}, "
              f"|logit| max {logits.abs().max():.3f}, {len(keys)} PEFT keys")


if __name__ == "__main__":
    main()
