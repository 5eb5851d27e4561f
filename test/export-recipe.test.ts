// qlora export --format recipe --to axolotl|trl: real qlora train runs (stories260K, two steps) handed
// off; the axolotl YAML, the accelerate FSDP config and the TRL script's own --print-config are
// parsed back and compared with the run's config.yaml field by field, and the data files with the
// rows as training rendered them. The Python script is compiled (and its settings printed) when a
// python3 is on the PATH (CI's image has one); it needs nothing but the standard library for that.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import YAML from 'yaml';
import { BUILTIN_CHAT_TEMPLATES } from '../src/data/builtin-chat-templates.js';
import { ChatTemplate } from '../src/data/chat-template.js';
import { decimal, pyYaml } from '../src/cli/export-recipe.js';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const TSX = path.join(root, 'node_modules', 'tsx', 'dist', 'loader.mjs');
const STORIES = path.join(root, 'fixtures', 'stories260K', 'stories260K.bin');
const VIGGO = path.join(root, 'fixtures', 'datasets', 'viggo');

function qlora(args: string[], cwd: string) {
  return spawnSync(
    process.execPath,
    ['--import', TSX, path.join(root, 'src', 'cli', 'run.ts'), ...args],
    { cwd, encoding: 'utf8', timeout: 180_000 },
  );
}

function ok(r: ReturnType<typeof qlora>): string {
  assert.equal(r.status, 0, `${r.stdout}\n${r.stderr}`);
  return r.stdout;
}

/** Compiles a Python file without writing __pycache__ anywhere. */
function pyCompile(file: string) {
  return spawnSync(
    python!,
    ['-c', 'import sys; compile(open(sys.argv[1]).read(), sys.argv[1], "exec")', file],
    { encoding: 'utf8' },
  );
}

const python = (() => {
  const r = spawnSync('python3', ['--version'], { encoding: 'utf8' });
  return r.status === 0 ? 'python3' : null;
})();

function readJsonl(file: string): Record<string, unknown>[] {
  return fs
    .readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l.length > 0)
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

function readCsv(file: string): { mr: string; ref: string }[] {
  // The two-column viggo file: fields quoted or not, no embedded quotes.
  return fs
    .readFileSync(file, 'utf8')
    .split('\n')
    .slice(1)
    .filter((l) => l.length > 0)
    .map((l) => {
      const m = /^(?:"([^"]*)"|([^,]*)),(?:"([^"]*)"|(.*))$/.exec(l);
      assert.ok(m, l);
      return { mr: m[1] ?? m[2]!, ref: m[3] ?? m[4]! };
    });
}

// One run with most settings off their defaults, so a field mapped from the wrong setting shows.
const RUN_FLAGS = [
  '--max-steps', '2', '--lr', '0.003', '--schedule', 'linear', '--warmup-steps', '1',
  '--rank', '4', '--alpha', '12', '--dropout', '0.1', '--targets', 'v_proj,q_proj,down_proj',
  '--layers', '0,2', '--rslora', '--init', 'gaussian', '-b', '2', '--grad-accum', '3',
  '--seq-len', '384', '--no-packing', '--eval-every', '1', '--eval-batches', '1', '--save-every', '1',
  '--keep-checkpoints', '2', '--optimizer', 'adamw8bit', '--weight-decay', '0.01',
  '--max-grad-norm', '0.5', '--seed', '7', '--quant', 'fp4', '--no-double-quant',
  '--gradient-checkpointing', '--compute-dtype', 'f32', '--early-stopping', '3', '--load-best',
]; // prettier-ignore

test('a prompt/completion run (template, columns, a validation file) as axolotl YAML and a TRL script with the same settings', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qlora-recipe-'));
  try {
    const run = path.join(dir, 'run');
    ok(
      qlora(
        [
          'train', '-m', STORIES, '-d', VIGGO, '-o', run, ...RUN_FLAGS,
          '--columns', 'completion=ref', '--template', 'Meaning: {mr}\\nSentence: ',
        ],
        dir,
      ),
    ); // prettier-ignore
    const cfg = YAML.parse(fs.readFileSync(path.join(run, 'config.yaml'), 'utf8')) as Record<
      string,
      unknown
    >;
    const ax = path.join(dir, 'ax');
    const out = ok(
      qlora(['export', '-a', run, '--format', 'recipe', '--to', 'axolotl', '-o', ax], dir),
    );
    assert.match(out, /300 training rows, 100 validation rows, prompt-completion/);

    // The data, rendered as training rendered it: the template applied to each row's mr.
    const rows = readCsv(path.join(VIGGO, 'train.csv'));
    const train = readJsonl(path.join(ax, 'data', 'train.jsonl'));
    assert.equal(train.length, rows.length);
    train.forEach((r, i) => {
      assert.deepEqual(r, {
        prompt: `Meaning: ${rows[i]!.mr}\nSentence: `,
        completion: rows[i]!.ref,
      });
    });
    assert.equal(readJsonl(path.join(ax, 'data', 'valid.jsonl')).length, 100);

    // axolotl's keys, each from the run's setting.
    const text = fs.readFileSync(path.join(ax, 'axolotl.yaml'), 'utf8');
    assert.doesNotMatch(
      text,
      /^\s*[\w-]+: -?\d+(\.\d+)?e[-+]?\d+$/m,
      'a float PyYAML reads as text',
    );
    const a = YAML.parse(text) as Record<string, unknown>;
    const expected: Record<string, unknown> = {
      base_model: cfg.model,
      load_in_4bit: true,
      adapter: 'qlora',
      bnb_config_kwargs: {
        bnb_4bit_quant_type: cfg.quant,
        bnb_4bit_use_double_quant: cfg.double_quant,
      },
      sequence_len: cfg.seq_len,
      sample_packing: cfg.packing,
      train_on_inputs: cfg.train_on_prompt,
      lora_r: cfg.rank,
      lora_alpha: cfg.alpha,
      lora_dropout: cfg.dropout,
      lora_target_modules: ['q_proj', 'v_proj', 'down_proj'],
      peft_layers_to_transform: cfg.layers,
      peft_use_rslora: cfg.rslora,
      peft_init_lora_weights: cfg.init,
      micro_batch_size: cfg.batch_size,
      gradient_accumulation_steps: cfg.grad_accum,
      max_steps: cfg.max_steps,
      optimizer: 'adamw_bnb_8bit',
      learning_rate: cfg.lr,
      lr_scheduler: cfg.schedule,
      warmup_steps: cfg.warmup_steps,
      weight_decay: cfg.weight_decay,
      max_grad_norm: cfg.max_grad_norm,
      gradient_checkpointing: cfg.gradient_checkpointing,
      eval_steps: cfg.eval_every,
      save_steps: cfg.save_every,
      save_total_limit: cfg.keep_checkpoints,
      early_stopping_patience: cfg.early_stopping,
      load_best_model_at_end: cfg.load_best,
      seed: cfg.seed,
    };
    for (const [k, v] of Object.entries(expected)) assert.deepEqual(a[k], v, `axolotl ${k}`);
    assert.equal(a.bf16, undefined, 'f32 compute: no bf16');
    assert.equal(a.num_epochs, undefined);
    assert.equal(a.val_set_size, undefined, 'the validation file is used, not a held-out fraction');
    const ds = (a.datasets as Record<string, unknown>[])[0]!;
    assert.equal(ds.path, 'data/train.jsonl');
    assert.deepEqual(ds.type, {
      field_instruction: 'prompt',
      field_output: 'completion',
      format: '{instruction}',
      no_input_format: '{instruction}',
    });
    assert.equal((a.test_datasets as Record<string, unknown>[])[0]!.path, 'data/valid.jsonl');
    const fsdp = YAML.parse(fs.readFileSync(path.join(ax, 'axolotl-fsdp.yaml'), 'utf8')) as Record<
      string,
      unknown
    >;
    assert.equal(fsdp.fsdp_version, 2);
    assert.equal(
      (fsdp.fsdp_config as Record<string, unknown>).transformer_layer_cls_to_wrap,
      'LlamaDecoderLayer',
    );
    assert.equal(fsdp.lora_r, cfg.rank);

    // TRL: the script and accelerate's FSDP config.
    const trl = path.join(dir, 'trl');
    ok(qlora(['export', '-a', run, '--format', 'recipe', '--to', 'trl', '-o', trl], dir));
    const acc = YAML.parse(
      fs.readFileSync(path.join(trl, 'accelerate_fsdp.yaml'), 'utf8'),
    ) as Record<string, Record<string, unknown>>;
    assert.equal(acc.distributed_type as unknown, 'FSDP');
    assert.equal(acc.fsdp_config!.fsdp_use_orig_params, false);
    assert.equal(acc.fsdp_config!.fsdp_cpu_ram_efficient_loading, true);
    assert.equal(acc.mixed_precision as unknown, 'no');
    const script = path.join(trl, 'train_trl.py');
    assert.match(fs.readFileSync(script, 'utf8'), /^#!\/usr\/bin\/env python3\n/);
    if (!python) return;
    const compiled = pyCompile(script);
    assert.equal(compiled.status, 0, compiled.stderr);
    const printed = spawnSync(python, [script, '--print-config'], { encoding: 'utf8' });
    assert.equal(printed.status, 0, printed.stderr);
    const p = JSON.parse(printed.stdout) as Record<string, Record<string, unknown>>;
    assert.equal(p.model as unknown, cfg.model);
    assert.equal(p.dtype as unknown, 'float32');
    assert.deepEqual(p.quantization, {
      load_in_4bit: true,
      bnb_4bit_quant_type: 'fp4',
      bnb_4bit_use_double_quant: false,
      bnb_4bit_compute_dtype: 'float32',
      bnb_4bit_quant_storage: 'float32',
    });
    assert.deepEqual(p.lora, {
      r: cfg.rank,
      lora_alpha: cfg.alpha,
      lora_dropout: cfg.dropout,
      target_modules: ['q_proj', 'v_proj', 'down_proj'],
      layers_to_transform: cfg.layers,
      use_rslora: true,
      init_lora_weights: 'gaussian',
      bias: 'none',
      task_type: 'CAUSAL_LM',
    });
    const t = p.training!;
    const sft: Record<string, unknown> = {
      max_length: cfg.seq_len,
      packing: cfg.packing,
      completion_only_loss: true,
      per_device_train_batch_size: cfg.batch_size,
      gradient_accumulation_steps: cfg.grad_accum,
      max_steps: cfg.max_steps,
      learning_rate: cfg.lr,
      lr_scheduler_type: cfg.schedule,
      warmup_steps: cfg.warmup_steps,
      optim: 'adamw_bnb_8bit',
      weight_decay: cfg.weight_decay,
      max_grad_norm: cfg.max_grad_norm,
      gradient_checkpointing: true,
      bf16: false,
      fp16: false,
      eval_strategy: 'steps',
      eval_steps: cfg.eval_every,
      save_strategy: 'steps',
      save_steps: cfg.save_every,
      save_total_limit: cfg.keep_checkpoints,
      load_best_model_at_end: cfg.load_best,
      metric_for_best_model: 'eval_loss',
      greater_is_better: false,
      seed: cfg.seed,
    };
    for (const [k, v] of Object.entries(sft)) assert.deepEqual(t[k], v, `SFTConfig ${k}`);
    assert.equal(p.early_stopping_patience as unknown, cfg.early_stopping);
    assert.deepEqual(p.data, {
      train: 'data/train.jsonl',
      valid: 'data/valid.jsonl',
      rows: 'prompt-completion',
      valid_fraction: 0,
    });
    // The CPU switches: no bitsandbytes, no 8-bit optimizer, f32.
    const cpu = spawnSync(
      python,
      [script, '--print-config', '--no-4bit', '--cpu', '--max-steps', '3'],
      {
        encoding: 'utf8',
      },
    );
    const c = JSON.parse(cpu.stdout) as Record<string, Record<string, unknown>>;
    assert.equal(c.quantization, null);
    assert.equal(c.training!.optim, 'adamw_torch');
    assert.equal(c.training!.use_cpu, true);
    assert.equal(c.training!.max_steps, 3);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('a chat run becomes segment rows whose labels are the assistant turns; defaults map to cosine, all-linear, bf16, a held-out fraction', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qlora-recipe-chat-'));
  try {
    const chats = Array.from({ length: 12 }, (_, i) => ({
      messages: [
        { role: 'system', content: 'Be brief.' },
        { role: 'user', content: `What is ${i} plus ${i}?` },
        { role: 'assistant', content: `It is ${2 * i}.` },
        { role: 'user', content: 'Sure?' },
        { role: 'assistant', content: 'Yes.' },
      ],
    }));
    const data = path.join(dir, 'chats.jsonl');
    fs.writeFileSync(data, chats.map((c) => JSON.stringify(c)).join('\n'));
    const run = path.join(dir, 'run');
    ok(
      qlora(
        ['train', '-m', STORIES, '-d', data, '-o', run, '--max-steps', '1', '--seq-len', '128',
          '--chat-template', 'chatml', '--quant', 'none', '--eval-every', '0', '--save-every', '0'],
        dir,
      ),
    ); // prettier-ignore
    const out = path.join(dir, 'ax');
    ok(qlora(['export', '-a', run, '--format', 'recipe', '--to', 'axolotl', '-o', out], dir));
    const rows = readJsonl(path.join(out, 'data', 'train.jsonl'));
    assert.equal(rows.length, chats.length);
    const template = new ChatTemplate(BUILTIN_CHAT_TEMPLATES.chatml!, {
      bosToken: '<s>',
      eosToken: '</s>',
    });
    rows.forEach((row, i) => {
      const segments = row.segments as { label: boolean; text: string }[];
      const { text, spans } = template.renderWithAssistantSpans(chats[i]!.messages);
      // BOS first (the tokenizer adds one), then the chat exactly, loss only on the assistant turns.
      assert.equal(segments[0]!.label, false);
      assert.equal(segments.map((s) => s.text).join(''), `<s>${text}`);
      const trained = segments.filter((s) => s.label).map((s) => s.text);
      assert.deepEqual(
        trained,
        spans.map((s) => s.through.slice(s.before.length)),
      );
      assert.equal(trained.length, 2);
    });
    // The rows differ per trainer, so one folder never holds both; the same trainer may re-export.
    const mixed = qlora(['export', '-a', run, '--format', 'recipe', '--to', 'trl', '-o', out], dir);
    assert.notEqual(mixed.status, 0);
    assert.match(
      mixed.stderr,
      /not empty \(axolotl-fsdp\.yaml, axolotl\.yaml\); give a new folder/,
    );
    ok(qlora(['export', '-a', run, '--format', 'recipe', '--to', 'axolotl', '-o', out], dir));
    // For TRL the text goes in without BOS: the script adds the id as qlora-ts does.
    const trl = path.join(dir, 'trl');
    ok(qlora(['export', '-a', run, '--format', 'recipe', '--to', 'trl', '-o', trl], dir));
    readJsonl(path.join(trl, 'data', 'train.jsonl')).forEach((row, i) => {
      const segments = row.segments as { label: boolean; text: string }[];
      const { text } = template.renderWithAssistantSpans(chats[i]!.messages);
      assert.equal(segments.map((s) => s.text).join(''), text);
      assert.equal(segments.filter((s) => s.label).length, 2);
    });
    const a = YAML.parse(fs.readFileSync(path.join(out, 'axolotl.yaml'), 'utf8')) as Record<
      string,
      unknown
    >;
    assert.equal((a.datasets as Record<string, unknown>[])[0]!.type, 'input_output');
    assert.equal(a.load_in_4bit, false);
    assert.equal(a.adapter, 'lora');
    assert.equal(a.bnb_config_kwargs, undefined);
    assert.equal(a.lora_target_linear, true);
    assert.equal(a.lr_scheduler, 'cosine');
    assert.equal(a.bf16, true);
    assert.equal(a.val_set_size, 0.05);
    assert.equal(a.warmup_ratio, 0.03);
    assert.equal(a.optimizer, 'adamw_torch');
    assert.equal(a.adam_epsilon, 1e-8);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('--format recipe needs a training output folder and --to; both refusals say what to give', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qlora-recipe-bad-'));
  try {
    const noRun = qlora(
      ['export', '-a', dir, '--format', 'recipe', '--to', 'trl', '-o', path.join(dir, 'o')],
      dir,
    );
    assert.notEqual(noRun.status, 0);
    assert.match(
      noRun.stderr,
      /config\.yaml: not found; --format recipe takes the output folder of a qlora train run/,
    );
    const noTo = qlora(['export', '-a', dir, '--format', 'recipe', '-o', path.join(dir, 'o')], dir);
    assert.notEqual(noTo.status, 0);
    assert.match(noTo.stderr, /--format recipe needs --to axolotl\|trl/);
    const badTo = qlora(
      ['export', '-a', dir, '--format', 'recipe', '--to', 'deepspeed', '-o', 'x'],
      dir,
    );
    assert.notEqual(badTo.status, 0);
    assert.match(badTo.stderr, /--to/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('YAML for Python: exponent-form floats are written in decimals that read back exactly', () => {
  for (const n of [1e-8, 2e-5, 1.5e-7, -3e-7, 0.1 * 3e-6]) {
    assert.equal(Number(decimal(String(n))), n);
    assert.doesNotMatch(decimal(String(n)), /e/);
  }
  const text = pyYaml({ eps: 1e-8, list: [2e-5], nested: { lr: 3e-7 }, s: '1e-8', n: 0.5 });
  assert.doesNotMatch(text.replace(/"1e-8"/, ''), /e-/);
  assert.deepEqual(YAML.parse(text), {
    eps: 1e-8,
    list: [2e-5],
    nested: { lr: 3e-7 },
    s: '1e-8',
    n: 0.5,
  });
});

test('scripts/peft-interop.py compiles', { skip: python ? false : 'no python3' }, () => {
  const r = pyCompile(path.join(root, 'scripts', 'peft-interop.py'));
  assert.equal(r.status, 0, r.stderr);
});
