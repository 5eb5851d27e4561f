// The README's library example, on the bundled model and data, through the public entry point.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import {
  Batcher,
  Trainer,
  generate,
  loadDataset,
  loadModel,
  loadPeftAdapter,
} from '../src/index.js';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');

test('the README library example trains, saves a PEFT adapter and generates', async () => {
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'qlora-api-'));
  try {
    const lora = {
      r: 4,
      alpha: 8,
      dropout: 0.05,
      useRslora: false,
      init: 'kaiming',
      seed: 0,
      targets: 'all-linear',
      layers: null,
    } as const;
    const { model, tokenizer } = await loadModel({
      model: path.join(root, 'fixtures', 'stories260K', 'stories260K.bin'),
      quantization: { quantType: 'nf4', blocksize: 64, doubleQuant: true },
      lora,
    });
    const data = await loadDataset(
      path.join(root, 'fixtures', 'datasets', 'llamafactory_identity', 'identity.json'),
      tokenizer,
      { maxSeqLen: 128 },
    );
    const batches = new Batcher(data.train, {
      batchSize: 4,
      seqLen: 128,
      padId: tokenizer.eosId ?? 0,
      seed: 0,
    });
    let cursor = { epoch: 0, index: 0 };
    const source = {
      next: () => {
        const r = batches.next(cursor);
        cursor = r.cursor;
        return r.batch;
      },
      cursor: () => cursor,
      restore: (c: unknown) => {
        cursor = c as typeof cursor;
      },
    };
    const trainer = new Trainer(
      model,
      lora,
      {
        outputDir: out,
        maxSteps: 6,
        lr: 2e-3,
        schedule: 'cosine',
        warmupSteps: 1,
        gradAccum: 2,
        maxGradNorm: 1,
        weightDecay: 0,
        optimizer: 'adamw',
        seed: 0,
        gradientCheckpointing: true,
        lossChunkRows: 256,
        evalEvery: 3,
        saveEvery: 3,
        keepCheckpoints: 1,
        earlyStoppingPatience: 0,
        onNonFinite: 'stop',
        resume: false,
        baseModel: null,
      },
      source,
      () => [
        ...new Batcher(data.valid, { batchSize: 4, seqLen: 128, padId: 0, shuffle: false }).epoch(
          0,
        ),
      ],
    );
    const summary = await trainer.run();
    trainer.dispose();
    assert.equal(summary.steps, 6);
    assert.ok(summary.finalEvalLoss !== null && Number.isFinite(summary.finalEvalLoss));
    assert.equal(loadPeftAdapter(out).tensors.size, 70);
    assert.deepEqual(
      fs.readdirSync(out).filter((f) => f.startsWith('checkpoint-')),
      ['checkpoint-6'],
      'keeps the newest checkpoint only',
    );
    const arena = model.backend.createArena();
    const ids = tokenizer.encode('Hello', { addSpecialTokens: true });
    const r = await generate(model, tokenizer, ids, arena, { maxTokens: 16, temperature: 0 });
    assert.ok(r.tokens.length > 0);
    arena.dispose();
    model.dispose();
  } finally {
    fs.rmSync(out, { recursive: true, force: true });
  }
});
