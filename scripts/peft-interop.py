#!/usr/bin/env python3
"""PEFT interop, checked by PEFT itself (docs/interop.md says how to run it and what it found).

Needs Python with torch, transformers, peft (and, for the recipe check, trl, accelerate and
datasets); no GPU and no bitsandbytes. Runs qlora-ts from this checkout's sources (node + tsx).

  python scripts/peft-interop.py [--work DIR] [--keep] [--skip-recipe]

1. Writes a random-weight Llama-shape HF model (scripts/interop/random-base.ts: 2 layers, GQA,
   untied lm_head, stories260K's 512-token vocabulary) and a small text dataset.
2. qlora-ts adapter -> PEFT. `qlora train` trains two adapters: one on the full-precision base
   (--quant none) and one on the NF4 base (the default: NF4, block 64, double quantization; here
   with rsLoRA and dropout). PEFT loads each with PeftModel.from_pretrained on
   - the random base itself (the --quant none adapter), and
   - the same base dequantized from NF4 (`qlora quantize` then `qlora convert`: the weights the
     NF4 adapter was trained against, as f32) for the NF4 adapter,
   and its logits are compared with qlora-ts's (scripts/interop/logits.ts: the base the adapter
   records, every matmul in f32): max |difference| <= 1e-4.
3. PEFT adapter -> qlora-ts. transformers + peft train a LoRA (r 8, alpha 16, dropout 0.1 on the
   q/v/down projections, PEFT_TARGETS) for a few AdamW steps on CPU; qlora-ts loads the saved folder (full-precision base: a PEFT adapter
   records no base quantization) and the logits are compared (<= 1e-4); `qlora generate -a` with
   greedy decoding must print the text transformers' greedy generate() gives.
4. Recipe hand-off (unless --skip-recipe): `qlora export --format recipe --to trl` on the text run
   of step 2 and on a chat run (segment rows), each generated TRL script run for 3 steps on CPU
   (--no-4bit --cpu: no bitsandbytes here), its adapter loaded into qlora-ts with logits equal to
   transformers + PEFT's; and the script's segment rows -> (input_ids, completion_mask) compared
   with the ids and loss targets qlora-ts trained on (scripts/interop/tokens.ts).

Exits non-zero when a check fails; the last line says how many passed.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
TOLERANCE = 1e-4
# The adapter must move the logits by far more than the tolerance, or the comparison shows nothing.
MIN_EFFECT = 1e-2
PEFT_TARGETS = ["q_proj", "v_proj", "down_proj"]

results = []


def log(msg):
    print(msg, flush=True)


def node(*args, capture=False):
    """Runs a TypeScript entry point of this checkout with node + tsx."""
    cmd = ["node", "--import", "tsx", *map(str, args)]
    log("$ " + " ".join(cmd))
    r = subprocess.run(cmd, cwd=REPO, check=True, text=True, capture_output=capture)
    return r.stdout if capture else None


def qlora(*args, capture=False):
    return node("src/cli/run.ts", *args, capture=capture)


def check(name, ok, detail):
    results.append((name, ok, detail))
    log(f"{'PASS' if ok else 'FAIL'} {name}: {detail}")


def write_dataset(path):
    """Rows of the bundled tiny-shakespeare excerpt, a few lines each, as {"text": ...} JSONL."""
    lines = (REPO / "fixtures/datasets/tinyshakespeare/input.txt").read_text().splitlines()
    lines = [l for l in lines if l.strip()]
    rows = ["\n".join(lines[i : i + 4]) for i in range(0, 400, 4)]
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps({"text": r}) + "\n")
    return rows


def probe_ids(vocab):
    """Two fixed sequences: BOS + seeded random ids (24 and 17 tokens)."""
    g = torch.Generator().manual_seed(7)
    return [[1] + torch.randint(3, vocab, (n,), generator=g).tolist() for n in (23, 16)]


def hf_logits(model, sequences):
    model.eval()
    out = []
    with torch.no_grad():
        for ids in sequences:
            out.append(model(torch.tensor([ids])).logits[0].float())
    return out


def qlora_logits(work, model_dir, adapter, sequences, quant=None, tag="q"):
    safe = "".join(c if c.isalnum() else "-" for c in tag)
    ids_file = work / f"{safe}-ids.json"
    out_file = work / f"{safe}-logits.json"
    ids_file.write_text(json.dumps(sequences))
    args = ["scripts/interop/logits.ts", "--model", model_dir, "--ids", ids_file, "--out", out_file]
    if adapter is not None:
        args += ["--adapter", adapter]
    if quant is not None:
        args += ["--quant", quant]
    node(*args)
    data = json.loads(out_file.read_text())
    return data["base"], [torch.tensor(x) for x in data["logits"]]


def max_diff(a, b):
    return max((x - y).abs().max().item() for x, y in zip(a, b))


def load_base(path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)


def compare_adapter(name, work, hf_base_dir, qlora_base_dir, adapter, sequences, quant=None):
    """PEFT on hf_base_dir vs qlora-ts on qlora_base_dir (its recorded base unless quant)."""
    from peft import PeftModel

    base_logits = hf_logits(load_base(hf_base_dir), sequences)
    peft_model = PeftModel.from_pretrained(load_base(hf_base_dir), str(adapter))
    want = hf_logits(peft_model, sequences)
    qbase, got = qlora_logits(work, qlora_base_dir, adapter, sequences, quant, tag=name)
    d = max_diff(want, got)
    effect = max_diff(want, base_logits)
    check(
        f"{name}: logits",
        d <= TOLERANCE and effect >= MIN_EFFECT,
        f"max |PEFT - qlora-ts| = {d:.3g} (<= {TOLERANCE:g}); the adapter moves PEFT's logits by "
        f"up to {effect:.3g}; PEFT base {Path(hf_base_dir).name}, qlora-ts base {qbase}",
    )
    return peft_model


def train_peft(work, base_dir, rows, out):
    """A few AdamW steps of LoRA with transformers + peft on CPU, saved with save_pretrained."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoTokenizer

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(str(base_dir))
    model = get_peft_model(
        load_base(base_dir),
        LoraConfig(
            r=8,
            lora_alpha=16,
            lora_dropout=0.1,
            target_modules=PEFT_TARGETS,
            task_type="CAUSAL_LM",
        ),
    )
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for step in range(6):
        # Four rows a step, each cut to 32 tokens (every row is longer): no padding needed.
        ids = [tok(r).input_ids[:32] for r in rows[step * 4 : step * 4 + 4]]
        input_ids = torch.tensor(ids)
        loss = model(input_ids=input_ids, labels=input_ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        log(f"peft step {step + 1}: loss {loss.item():.4f}")
    model.save_pretrained(str(out))
    return model


def greedy_check(work, base_dir, adapter, peft_model):
    """`qlora generate -a` greedy text == transformers greedy generate() on the same model."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(base_dir))
    prompt = "ROMEO:"
    n = 24
    ids = tok(prompt, return_tensors="pt").input_ids
    peft_model.eval()
    with torch.no_grad():
        out = peft_model.generate(
            input_ids=ids, max_new_tokens=n, do_sample=False, pad_token_id=0
        )
    want = tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
    text = qlora(
        "generate", "-m", base_dir, "-a", adapter, "-p", prompt, "-t", "0", "-n", str(n),
        "--compute-dtype", "f32", capture=True,
    )
    got = text[text.index(prompt) + len(prompt) :] if text.startswith(prompt) else text
    got = got.rstrip("\n")
    check(
        "peft-adapter: qlora generate -a (greedy)",
        got == want,
        f"transformers {want!r} / qlora-ts {got!r}",
    )


def write_chats(path):
    """Chat rows (messages) for the segment-row path of the recipe."""
    with open(path, "w") as f:
        for i in range(40):
            f.write(json.dumps({"messages": [
                {"role": "user", "content": f"What is {i} plus {i}?"},
                {"role": "assistant", "content": f"It is {2 * i}."},
                {"role": "user", "content": "Sure?"},
                {"role": "assistant", "content": "Yes, sure."},
            ]}) + "\n")


def recipe_check(work, base_dir, run_dir, name):
    """qlora export --format recipe --to trl, run it on CPU, load its adapter into qlora-ts."""
    out = work / f"recipe-{name}"
    qlora("export", "-a", run_dir, "--format", "recipe", "--to", "trl", "-o", out)
    trained = out / "trl-output"
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    cmd = [sys.executable, str(out / "train_trl.py"), "--no-4bit", "--cpu", "--max-steps", "3",
           "--output-dir", str(trained)]
    log("$ " + " ".join(cmd))
    subprocess.run(cmd, cwd=out, check=True, env=env)
    compare_adapter(f"trl-recipe-{name}", work, base_dir, base_dir, trained, probe_ids(512))
    return out


def segment_mask_check(work, base_dir, recipe_dir, data, chat_template):
    """The exported TRL script's segment rows -> (input_ids, completion_mask) equal the ids and loss
    targets qlora-ts trained on (scripts/interop/tokens.ts), example by example."""
    import importlib.util

    from transformers import AutoTokenizer

    spec = importlib.util.spec_from_file_location("train_trl", recipe_dir / "train_trl.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    convert = mod.segment_rows(AutoTokenizer.from_pretrained(str(base_dir)))
    rows = [json.loads(l) for l in (recipe_dir / "data/train.jsonl").read_text().splitlines() if l]
    tokens_file = work / "qlora-tokens.json"
    node("scripts/interop/tokens.ts", "--model", base_dir, "--data", data, "--chat-template",
         chat_template, "--out", tokens_file)
    want = json.loads(tokens_file.read_text())
    got = [convert(r) for r in rows]
    same = len(got) == len(want) and all(
        g["input_ids"] == w["ids"] and g["completion_mask"] == w["targets"] for g, w in zip(got, want)
    )
    loss = sum(sum(w["targets"]) for w in want)
    check(
        "trl-recipe-chat: segment rows -> tokens and loss mask",
        same,
        f"{len(got)} examples, {sum(len(w['ids']) for w in want)} tokens, {loss} with loss: "
        f"{'identical to' if same else 'DIFFERENT from'} qlora-ts's",
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", help="work folder (default: a temporary one)")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    ap.add_argument("--skip-recipe", action="store_true", help="skip the TRL recipe check")
    a = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    work = Path(a.work or tempfile.mkdtemp(prefix="qlora-peft-interop-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    import peft
    import transformers

    log(f"torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}")
    log(f"work folder: {work}")
    try:
        base = work / "base"
        node("scripts/interop/random-base.ts", base, "--seed", "1234")
        data = work / "data.jsonl"
        rows = write_dataset(data)
        seqs = probe_ids(512)
        common = ["-m", base, "-d", data, "--max-steps", "8", "--seq-len", "32", "--batch-size",
                  "4", "--lr", "1e-2", "--eval-every", "0", "--save-every", "0", "--overwrite"]

        # 2a. full-precision base
        run_fp = work / "qlora-fp"
        qlora("train", *common, "-o", run_fp, "--quant", "none", "--rank", "4", "--alpha", "8",
              "--dropout", "0", "--targets", "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj")
        compare_adapter("qlora-adapter (f32 base)", work, base, base, run_fp, seqs)

        # 2b. NF4 base: PEFT runs on the NF4 weights dequantized to f32.
        run_nf4 = work / "qlora-nf4"
        qlora("train", *common, "-o", run_nf4, "--rank", "8", "--alpha", "16", "--rslora",
              "--dropout", "0.05", "--targets", "all-linear")
        nf4 = work / "base-nf4"
        qlora("quantize", base, "-o", nf4)
        dequant = work / "base-nf4-dequantized"
        qlora("convert", nf4, "-o", dequant)
        compare_adapter("qlora-adapter (NF4 base)", work, dequant, base, run_nf4, seqs)

        # 3. PEFT-trained adapter into qlora-ts.
        peft_dir = work / "peft-trained"
        train_peft(work, base, rows, peft_dir)
        pm = compare_adapter("peft-adapter", work, base, base, peft_dir, seqs)
        greedy_check(work, base, peft_dir, pm)

        # 4. The TRL recipe hand-off: the text run of 2a, and a chat run (segment rows).
        if not a.skip_recipe:
            recipe_check(work, base, run_fp, "text")
            chats = work / "chats.jsonl"
            write_chats(chats)
            run_chat = work / "qlora-chat"
            qlora("train", "-m", base, "-d", chats, "-o", run_chat, "--chat-template", "chatml",
                  "--quant", "none", "--max-steps", "2", "--seq-len", "64", "--batch-size", "4",
                  "--lr", "1e-2", "--eval-every", "0", "--save-every", "0", "--overwrite")
            chat_dir = recipe_check(work, base, run_chat, "chat")
            segment_mask_check(work, base, chat_dir, chats, "chatml")
    finally:
        if not a.keep and not a.work:
            shutil.rmtree(work, ignore_errors=True)
    failed = [r for r in results if not r[1]]
    log(f"{len(results) - len(failed)}/{len(results)} checks passed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
