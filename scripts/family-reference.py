"""Independent references for a model family, from Hugging Face transformers and PEFT.

Writes, for FAMILY (a name `qlora init-random --config` knows: a family such as qwen3, or a shape
such as phi-3.5-mini):
  fixtures/families/FAMILY-tiny.reference.json  logits of transformers' model class on the weights
                                                 `qlora init-random --config FAMILY --tiny --seed 7`
                                                 writes (float32, eager attention)
  fixtures/families/FAMILY-peft-keys.json       the adapter tensor names and target_modules PEFT
                                                 saves for LoRA on every linear projection

Not part of the test suite (tests need no Python): run it by hand, outside the repository's
environment, e.g.
  python3 -m venv /tmp/venv && /tmp/venv/bin/pip install torch transformers peft safetensors
  /tmp/venv/bin/python scripts/family-reference.py qwen3
"""
import json
import pathlib
import subprocess
import sys
import tempfile

import torch
from peft import LoraConfig, get_peft_model
from safetensors import safe_open
from transformers import AutoModelForCausalLM

ROOT = pathlib.Path(__file__).resolve().parent.parent
SEED = 7
INPUT_IDS = [256, 72, 101, 108, 108, 111, 44, 32, 119, 111, 114, 108, 100, 300, 400, 511]


def main(family: str) -> None:
    out_dir = ROOT / "fixtures" / "families"
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = pathlib.Path(tmp) / "model"
        subprocess.run(
            ["node", "--import", "tsx", "src/cli/run.ts", "init-random", "--config", family,
             "--tiny", "--seed", str(SEED), "-o", str(model_dir)],
            cwd=ROOT, check=True,
        )
        model = AutoModelForCausalLM.from_pretrained(
            model_dir, torch_dtype=torch.float32, attn_implementation="eager"
        )
        model.eval()
        with torch.no_grad():
            logits = model(torch.tensor([INPUT_IDS])).logits[0]
            # The first 8 tokens alone: a LongRoPE model (tiny original context 8) then uses its
            # short factors, the whole input its long ones.
            prefix = model(torch.tensor([INPUT_IDS[:8]])).logits[0]
        reference = {
            "generated_by": "scripts/family-reference.py",
            "transformers": __import__("transformers").__version__,
            "torch": torch.__version__,
            "model_class": type(model).__name__,
            "config": family,
            "seed": SEED,
            "input_ids": INPUT_IDS,
            "logits": [[float(f"{x:.7g}") for x in row.tolist()] for row in logits],
            "prefix_logits": [[float(f"{x:.7g}") for x in row.tolist()] for row in prefix],
        }
        (out_dir / f"{family}-tiny.reference.json").write_text(json.dumps(reference) + "\n")

        def adapter(targets):
            peft_model = get_peft_model(
                AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32),
                LoraConfig(r=2, lora_alpha=3, target_modules=targets),
            )
            adapter_dir = pathlib.Path(tmp) / f"adapter-{len(str(targets))}"
            peft_model.save_pretrained(adapter_dir)
            with safe_open(adapter_dir / "adapter_model.safetensors", "pt") as f:
                keys = sorted(f.keys())
                shapes = {k: list(f.get_slice(k).get_shape()) for k in keys}
            adapter.shapes = shapes
            return keys, json.loads((adapter_dir / "adapter_config.json").read_text())

        # "all-linear" (every linear layer but the output head) picks the modules; naming them as
        # PEFT then lists them gives the same tensors and the target_modules users write.
        all_keys, _ = adapter("all-linear")
        modules = sorted({k.split(".")[-3] for k in all_keys})
        keys, config = adapter(modules)
        assert keys == all_keys, "explicit targets adapt other modules than all-linear"
        peft_keys = {
            "generated_by": "scripts/family-reference.py",
            "peft": __import__("peft").__version__,
            "model_class": type(model).__name__,
            "target_modules": sorted(config["target_modules"]),
            "keys": keys,
            "shapes": adapter.shapes,
        }
        (out_dir / f"{family}-peft-keys.json").write_text(json.dumps(peft_keys, indent=1) + "\n")
        print(f"{family}: {type(model).__name__}, {len(keys)} adapter tensors")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "qwen3")
