/**
 * `qlora export --format recipe --to axolotl|trl`: a qlora-ts run, handed to the trainers people use
 * when one machine is not enough. The same run — base model, data (rendered by recipe-data.ts),
 * LoRA, 4-bit base, optimizer, schedule, batch and sequence settings, seed — as
 *
 * - an axolotl config (`axolotl.yaml`, and `axolotl-fsdp.yaml` with FSDP for several GPUs), keys
 *   as axolotl's config reference names them;
 * - a TRL + PEFT script (`train_trl.py`) with the settings as SFTConfig / LoraConfig /
 *   BitsAndBytesConfig arguments, launched with `accelerate launch --config_file
 *   accelerate_fsdp.yaml` (FSDP-QLoRA: the 4-bit weights stored as the compute dtype so FSDP can
 *   shard them) or plain `python` on one GPU; `--no-4bit --cpu` runs it without bitsandbytes or a
 *   GPU, and `--print-config` prints the arguments it would pass, as JSON, without importing
 *   anything.
 *
 * Where a setting has no counterpart there (a 4-bit block size other than bitsandbytes' 64, a
 * 4-bit lm_head or embedding table, NaN skipping) the export says so in a warning and in the
 * README it writes; nothing is silently dropped.
 */
import type { Architecture } from '../io/config.js';
import type { TrainSettings } from '../train/settings.js';
import { PROJECTIONS } from '../models/llama.js';
import { familyOf } from '../models/registry.js';
import { ADAMW_DEFAULTS } from '../train/optimizer.js';
import type { HandOffRowKind } from './recipe-data.js';

export const RECIPE_TARGETS = ['axolotl', 'trl'] as const;
export type RecipeTarget = (typeof RECIPE_TARGETS)[number];

/** The one block size bitsandbytes' 4-bit quantization uses through transformers. */
const BNB_BLOCKSIZE = 64;

export interface HandOffRun {
  /** Hub id (preferred: it works on the other machine) or the local path of the base. */
  readonly baseModel: string;
  readonly architecture: Architecture;
  readonly settings: TrainSettings;
  readonly rowKind: HandOffRowKind;
  /** Paths relative to the output folder. */
  readonly trainFile: string;
  readonly validFile: string | null;
  /** The run folder it came from (for comments). */
  readonly sourceRun: string;
}

/** transformers' decoder-layer class of a family (what FSDP wraps): LlamaForCausalLM → LlamaDecoderLayer. */
export function decoderLayerClass(architecture: Architecture): string {
  const cls = familyOf(architecture).hf.classes[0];
  if (!cls?.endsWith('ForCausalLM'))
    throw new Error(`no transformers decoder-layer class known for ${architecture}`);
  return cls.replace(/ForCausalLM$/, 'DecoderLayer');
}

/** What the other trainers cannot reproduce of this run, one sentence each. */
export function handOffWarnings(run: HandOffRun): string[] {
  const s = run.settings;
  const w: string[] = [];
  if (s.quant !== 'none' && s.blocksize !== BNB_BLOCKSIZE)
    w.push(
      `the run quantized with block size ${s.blocksize}; bitsandbytes (through transformers) always uses ${BNB_BLOCKSIZE}`,
    );
  if (s.quantizeHead || s.quantizeEmbeddings)
    w.push(
      'the run also stored the lm_head / embedding table in 4-bit; bitsandbytes through transformers keeps them in the compute dtype',
    );
  if (s.skipNonfinite)
    w.push('--skip-nonfinite has no counterpart: a non-finite loss is not skipped there');
  if (s.loadBest && s.evalEvery > 0 && saveSteps(s) !== s.saveEvery)
    w.push(
      `--load-best: checkpoints are saved every ${s.evalEvery} steps (at each evaluation; transformers picks the best among saved ones)`,
    );
  if (s.loadBest && s.evalEvery === 0)
    w.push('--load-best with --eval-every 0 has no counterpart: the last adapter is kept');
  if (s.evalEvery > 0)
    w.push(
      `evaluation runs over the whole validation set every ${s.evalEvery} steps (qlora-ts used ${s.evalBatches} batches)`,
    );
  return w;
}

/** Hugging Face's name for the schedule (constant with warm-up is its own scheduler there). */
export function hfScheduler(s: TrainSettings): string {
  if (s.schedule !== 'constant') return s.schedule;
  return (s.warmupSteps ?? 0) > 0 || s.warmupRatio > 0 ? 'constant_with_warmup' : 'constant';
}

/** transformers' optimizer name for ours. */
export function hfOptimizer(s: TrainSettings): string {
  return s.optimizer === 'adamw8bit' ? 'adamw_bnb_8bit' : 'adamw_torch';
}

/** torch dtype name of the 4-bit matmuls' compute (auto: bf16, what GPUs train QLoRA in). */
export function computeTorchDtype(s: TrainSettings): 'bfloat16' | 'float16' | 'float32' {
  return s.computeDtype === 'f32' ? 'float32' : s.computeDtype === 'f16' ? 'float16' : 'bfloat16';
}

function loraTargets(s: TrainSettings): 'all-linear' | string[] {
  if (s.targets === 'all-linear') return 'all-linear';
  // Keep our canonical order (PROJECTIONS), whatever order the flag listed them in.
  return PROJECTIONS.filter((p) => (s.targets as readonly string[]).includes(p));
}

// ---------------------------------------------------------------- axolotl

/** The axolotl config of the run (`fsdp`: with FSDP2 sharding for several GPUs). */
export function axolotlConfig(run: HandOffRun, fsdp = false): Record<string, unknown> {
  const s = run.settings;
  const quantized = s.quant !== 'none';
  const dtype = computeTorchDtype(s);
  const type =
    run.rowKind === 'text'
      ? 'completion'
      : run.rowKind === 'segments'
        ? 'input_output'
        : {
            // A user-defined instruction format: the prompt is already rendered, so it goes in as is.
            field_instruction: 'prompt',
            field_output: 'completion',
            format: '{instruction}',
            no_input_format: '{instruction}',
          };
  const dataset = (path: string) => ({ path, ds_type: 'json', type });
  const targets = loraTargets(s);
  const c: Record<string, unknown> = {
    base_model: run.baseModel,
    model_type: 'AutoModelForCausalLM',
    tokenizer_type: 'AutoTokenizer',
    load_in_8bit: false,
    load_in_4bit: quantized,
    adapter: quantized ? 'qlora' : 'lora',
  };
  if (quantized)
    c.bnb_config_kwargs = {
      bnb_4bit_quant_type: s.quant,
      bnb_4bit_use_double_quant: s.doubleQuant,
    };
  c.datasets = [dataset(run.trainFile)];
  if (run.validFile)
    c.test_datasets = [{ ...dataset(run.validFile), split: 'train', data_files: [run.validFile] }];
  else c.val_set_size = s.validFraction;
  c.dataset_prepared_path = 'last_run_prepared';
  c.output_dir = './axolotl-output';
  c.sequence_len = s.seqLen;
  c.sample_packing = s.packing;
  c.train_on_inputs = s.trainOnPrompt;
  c.lora_r = s.rank;
  c.lora_alpha = s.alpha;
  c.lora_dropout = s.dropout;
  if (targets === 'all-linear') c.lora_target_linear = true;
  else c.lora_target_modules = targets;
  if (s.layers) c.peft_layers_to_transform = [...s.layers];
  if (s.rslora) c.peft_use_rslora = true;
  if (s.init === 'gaussian') c.peft_init_lora_weights = 'gaussian';
  c.micro_batch_size = s.batchSize;
  c.gradient_accumulation_steps = s.gradAccum;
  if (s.maxSteps !== undefined) c.max_steps = s.maxSteps;
  else c.num_epochs = s.epochs ?? 1;
  c.optimizer = hfOptimizer(s);
  c.adam_beta1 = ADAMW_DEFAULTS.beta1;
  c.adam_beta2 = ADAMW_DEFAULTS.beta2;
  c.adam_epsilon = ADAMW_DEFAULTS.eps;
  c.learning_rate = s.lr;
  c.lr_scheduler = hfScheduler(s);
  if (s.warmupSteps !== undefined) c.warmup_steps = s.warmupSteps;
  else c.warmup_ratio = s.warmupRatio;
  c.weight_decay = s.weightDecay;
  c.max_grad_norm = s.maxGradNorm;
  c.gradient_checkpointing = s.gradientCheckpointing;
  if (dtype === 'bfloat16') c.bf16 = true;
  else if (dtype === 'float16') c.fp16 = true;
  if (s.evalEvery > 0) c.eval_steps = s.evalEvery;
  const bestOnEval = s.loadBest && s.evalEvery > 0;
  if (s.saveEvery > 0 || bestOnEval) c.save_steps = saveSteps(s);
  c.save_total_limit = s.keepCheckpoints;
  if (s.earlyStopping > 0) c.early_stopping_patience = s.earlyStopping;
  if (bestOnEval) c.load_best_model_at_end = true;
  c.seed = s.seed;
  if (fsdp) {
    c.fsdp_version = 2;
    c.fsdp_config = {
      offload_params: false,
      state_dict_type: 'FULL_STATE_DICT',
      auto_wrap_policy: 'TRANSFORMER_BASED_WRAP',
      transformer_layer_cls_to_wrap: decoderLayerClass(run.architecture),
      reshard_after_forward: true,
      cpu_ram_efficient_loading: true,
    };
  }
  return c;
}

// ---------------------------------------------------------------- TRL

/** BitsAndBytesConfig arguments (null: a full-precision base, plain LoRA). */
export function trlQuantization(s: TrainSettings): Record<string, unknown> | null {
  if (s.quant === 'none') return null;
  const dtype = computeTorchDtype(s);
  return {
    load_in_4bit: true,
    bnb_4bit_quant_type: s.quant,
    bnb_4bit_use_double_quant: s.doubleQuant,
    bnb_4bit_compute_dtype: dtype,
    // FSDP shards float tensors only: the packed 4-bit weights are stored as the compute dtype.
    bnb_4bit_quant_storage: dtype,
  };
}

/** peft.LoraConfig arguments. */
export function trlLora(s: TrainSettings): Record<string, unknown> {
  return {
    r: s.rank,
    lora_alpha: s.alpha,
    lora_dropout: s.dropout,
    target_modules: loraTargets(s),
    layers_to_transform: s.layers ? [...s.layers] : null,
    use_rslora: s.rslora,
    init_lora_weights: s.init === 'gaussian' ? 'gaussian' : true,
    bias: 'none',
    task_type: 'CAUSAL_LM',
  };
}

/** trl.SFTConfig arguments (output_dir and the CPU switches are the script's). */
export function trlTraining(run: HandOffRun): Record<string, unknown> {
  const s = run.settings;
  const bestOnEval = s.loadBest && s.evalEvery > 0;
  const dtype = computeTorchDtype(s);
  return {
    max_length: s.seqLen,
    packing: s.packing,
    // Loss on the completion only (prompt-completion rows); segment rows carry their own mask.
    completion_only_loss: !s.trainOnPrompt,
    per_device_train_batch_size: s.batchSize,
    per_device_eval_batch_size: s.batchSize,
    gradient_accumulation_steps: s.gradAccum,
    max_steps: s.maxSteps ?? -1,
    num_train_epochs: s.maxSteps !== undefined ? 1 : (s.epochs ?? 1),
    learning_rate: s.lr,
    lr_scheduler_type: hfScheduler(s),
    // transformers reads a warm-up below 1 as a fraction of the steps (rounded up, as qlora-ts does).
    warmup_steps: s.warmupSteps ?? s.warmupRatio,
    optim: hfOptimizer(s),
    adam_beta1: ADAMW_DEFAULTS.beta1,
    adam_beta2: ADAMW_DEFAULTS.beta2,
    adam_epsilon: ADAMW_DEFAULTS.eps,
    weight_decay: s.weightDecay,
    max_grad_norm: s.maxGradNorm,
    gradient_checkpointing: s.gradientCheckpointing,
    gradient_checkpointing_kwargs: s.gradientCheckpointing ? { use_reentrant: false } : null,
    bf16: dtype === 'bfloat16',
    fp16: dtype === 'float16',
    eval_strategy: s.evalEvery > 0 ? 'steps' : 'no',
    ...(s.evalEvery > 0 ? { eval_steps: s.evalEvery } : {}),
    save_strategy: s.saveEvery > 0 || bestOnEval ? 'steps' : 'no',
    ...(s.saveEvery > 0 || bestOnEval ? { save_steps: saveSteps(s) } : {}),
    save_total_limit: s.keepCheckpoints,
    load_best_model_at_end: bestOnEval,
    // Early stopping and the best adapter go by the eval loss, as in qlora-ts.
    ...(s.earlyStopping > 0 || bestOnEval
      ? { metric_for_best_model: 'eval_loss', greater_is_better: false }
      : {}),
    logging_steps: 1,
    seed: s.seed,
    data_seed: s.seed,
    report_to: 'none',
  };
}

/**
 * transformers keeps the best checkpoint only among those it saves, so with --load-best it saves at
 * every evaluation (a multiple of eval_steps, as it requires).
 */
function saveSteps(s: TrainSettings): number {
  if (!(s.loadBest && s.evalEvery > 0)) return s.saveEvery;
  return s.saveEvery > 0 && s.saveEvery % s.evalEvery === 0 ? s.saveEvery : s.evalEvery;
}

/** A JSON-able value as a Python literal. */
export function pyLiteral(value: unknown, indent = 0): string {
  const pad = ' '.repeat(indent + 4);
  const end = ' '.repeat(indent);
  if (value === null || value === undefined) return 'None';
  if (value === true) return 'True';
  if (value === false) return 'False';
  if (typeof value === 'number') {
    if (!Number.isFinite(value)) throw new Error(`not a finite number: ${value}`);
    return String(value);
  }
  if (typeof value === 'string') return JSON.stringify(value);
  if (Array.isArray(value)) return `[${value.map((v) => pyLiteral(v, indent)).join(', ')}]`;
  const entries = Object.entries(value as Record<string, unknown>);
  if (entries.length === 0) return '{}';
  return `{\n${entries.map(([k, v]) => `${pad}${JSON.stringify(k)}: ${pyLiteral(v, indent + 4)},`).join('\n')}\n${end}}`;
}

/** The TRL + PEFT training script. */
export function trlScript(run: HandOffRun): string {
  const s = run.settings;
  const data = {
    train: run.trainFile,
    valid: run.validFile,
    rows: run.rowKind,
    // Held out as qlora-ts does when there is no validation file (a seeded random fraction).
    valid_fraction: run.validFile ? 0 : s.validFraction,
  };
  const early = s.earlyStopping;
  return `#!/usr/bin/env python3
"""QLoRA fine-tuning of ${run.baseModel} with TRL + PEFT: the run qlora-ts recorded in
${run.sourceRun}, handed off (qlora export --format recipe --to trl).

Several GPUs (FSDP-QLoRA):  accelerate launch --config_file accelerate_fsdp.yaml train_trl.py
One GPU:                    python train_trl.py
Without a GPU/bitsandbytes: python train_trl.py --no-4bit --cpu --max-steps 3   (a quick check)
The settings only:          python train_trl.py --print-config
Needs: torch, transformers, peft, trl, datasets, accelerate (and bitsandbytes for the 4-bit base).
"""
import argparse
import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))

MODEL = ${pyLiteral(run.baseModel)}
DATA = ${pyLiteral(data)}
# transformers.BitsAndBytesConfig (None: the run trained on a full-precision base).
QUANTIZATION = ${pyLiteral(trlQuantization(s))}
# peft.LoraConfig
LORA = ${pyLiteral(trlLora(s))}
# trl.SFTConfig
TRAINING = ${pyLiteral(trlTraining(run))}
EARLY_STOPPING_PATIENCE = ${early}


def settings(args):
    """The arguments this launch passes, with the command-line switches applied."""
    quantization = None if args.no_4bit else QUANTIZATION
    training = dict(TRAINING)
    training["output_dir"] = args.output_dir
    if args.max_steps is not None:
        training["max_steps"] = args.max_steps
    if args.cpu:
        # No GPU: f32 compute and the optimizer without bitsandbytes.
        training.update(use_cpu=True, bf16=False, fp16=False, optim="adamw_torch")
    if training["optim"] == "adamw_bnb_8bit" and args.no_4bit:
        training["optim"] = "adamw_torch"
    dtype = "float32" if args.cpu else (QUANTIZATION or {}).get("bnb_4bit_compute_dtype", "bfloat16")
    return {
        "model": MODEL,
        "dtype": dtype,
        "quantization": quantization,
        "lora": dict(LORA),
        "training": training,
        "data": dict(DATA),
        "early_stopping_patience": EARLY_STOPPING_PATIENCE,
    }


def segment_rows(tokenizer):
    """{"segments"} rows -> input_ids + completion_mask, as qlora-ts builds its examples: the text is
    tokenized whole, BOS goes first when the tokenizer adds one and the text does not start with it,
    and each loss boundary is where the tokens of the text before it stop agreeing with the whole's."""
    bos = tokenizer.bos_token_id
    adds_bos = bos is not None and tokenizer("a")["input_ids"][:1] == [bos]

    def encode(text):
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    def agree(prefix, ids):
        k = 0
        while k < len(prefix) and k < len(ids) and prefix[k] == ids[k]:
            k += 1
        return k

    def convert(row):
        text = "".join(s["text"] for s in row["segments"])
        ids = encode(text)
        mask = [0] * len(ids)
        start = 0
        for seg in row["segments"]:
            end = start + len(seg["text"])
            if seg["label"]:
                a = agree(encode(text[:start]), ids) if start else 0
                b = agree(encode(text[:end]), ids) if end < len(text) else len(ids)
                for i in range(a, b):
                    mask[i] = 1
            start = end
        if adds_bos and (not ids or ids[0] != bos):
            ids, mask = [bos] + ids, [0] + mask
        return {"input_ids": ids, "completion_mask": mask}

    return convert


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\\n")[0])
    ap.add_argument("--output-dir", default=os.path.join(HERE, "trl-output"))
    ap.add_argument("--max-steps", type=int, help="override the run's length")
    ap.add_argument("--no-4bit", action="store_true", help="full-precision base (no bitsandbytes)")
    ap.add_argument("--cpu", action="store_true", help="train on the CPU in f32")
    ap.add_argument("--print-config", action="store_true", help="print the settings as JSON and exit")
    args = ap.parse_args()
    cfg = settings(args)
    if args.print_config:
        print(json.dumps(cfg, indent=2))
        return

    import torch
    from datasets import load_dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig, EarlyStoppingCallback
    from trl import SFTConfig, SFTTrainer

    dtype = getattr(torch, cfg["dtype"])
    tokenizer = AutoTokenizer.from_pretrained(MODEL)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    q = cfg["quantization"]
    if q is not None:
        q = dict(q, bnb_4bit_compute_dtype=dtype, bnb_4bit_quant_storage=getattr(torch, q["bnb_4bit_quant_storage"]))
    model = AutoModelForCausalLM.from_pretrained(
        MODEL,
        dtype=dtype,
        quantization_config=BitsAndBytesConfig(**q) if q is not None else None,
    )

    files = {"train": os.path.join(HERE, DATA["train"])}
    if DATA["valid"]:
        files["validation"] = os.path.join(HERE, DATA["valid"])
    ds = load_dataset("json", data_files=files)
    if DATA["rows"] == "segments":
        ds = ds.map(segment_rows(tokenizer), remove_columns=["segments"])
    train = ds["train"]
    valid = ds["validation"] if "validation" in ds else None
    if valid is None and DATA["valid_fraction"] > 0:
        split = train.train_test_split(test_size=DATA["valid_fraction"], seed=TRAINING["seed"])
        train, valid = split["train"], split["test"]
    training = cfg["training"]
    if valid is None:
        training["eval_strategy"] = "no"
    callbacks = []
    if cfg["early_stopping_patience"] > 0 and valid is not None:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=cfg["early_stopping_patience"]))
    trainer = SFTTrainer(
        model=model,
        args=SFTConfig(**training),
        train_dataset=train,
        eval_dataset=valid,
        processing_class=tokenizer,
        peft_config=LoraConfig(**cfg["lora"]),
        callbacks=callbacks,
    )
    trainer.train()
    if trainer.is_fsdp_enabled:
        trainer.accelerator.state.fsdp_plugin.set_state_dict_type("FULL_STATE_DICT")
    trainer.save_model(training["output_dir"])
    if valid is not None:
        print(json.dumps(trainer.evaluate()))


if __name__ == "__main__":
    main()
`;
}

/**
 * accelerate's config for FSDP-QLoRA (PEFT's and bitsandbytes' documented set-up): full sharding
 * of each decoder layer, module states synced from rank 0 after a low-memory load, original
 * parameters off (the 4-bit weights are not plain parameters). num_processes: GPUs on the machine.
 */
export function accelerateFsdpConfig(run: HandOffRun, processes = 2): Record<string, unknown> {
  const dtype = computeTorchDtype(run.settings);
  return {
    compute_environment: 'LOCAL_MACHINE',
    debug: false,
    distributed_type: 'FSDP',
    downcast_bf16: 'no',
    fsdp_config: {
      fsdp_auto_wrap_policy: 'TRANSFORMER_BASED_WRAP',
      fsdp_transformer_layer_cls_to_wrap: decoderLayerClass(run.architecture),
      fsdp_backward_prefetch: 'BACKWARD_PRE',
      fsdp_cpu_ram_efficient_loading: true,
      fsdp_forward_prefetch: false,
      fsdp_offload_params: false,
      fsdp_sharding_strategy: 'FULL_SHARD',
      fsdp_state_dict_type: 'SHARDED_STATE_DICT',
      fsdp_sync_module_states: true,
      fsdp_use_orig_params: false,
    },
    machine_rank: 0,
    main_training_function: 'main',
    mixed_precision: dtype === 'bfloat16' ? 'bf16' : dtype === 'float16' ? 'fp16' : 'no',
    num_machines: 1,
    num_processes: processes,
    rdzv_backend: 'static',
    same_network: true,
    use_cpu: false,
  };
}
