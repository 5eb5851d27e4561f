import assert from 'node:assert/strict';
import { test } from 'node:test';
import { DEFAULT_SAMPLING, sampleToken, type SamplingOptions } from '../src/generate/sampler.js';

const logits = [2.0, 1.0, 0.5, 3.0, -1.0, 2.9];
const opts = (o: Partial<SamplingOptions>): SamplingOptions => ({ ...DEFAULT_SAMPLING, ...o });

function softmax(z: number[], t = 1): number[] {
  const m = Math.max(...z);
  const e = z.map((v) => Math.exp((v - m) / t));
  const s = e.reduce((a, b) => a + b, 0);
  return e.map((v) => v / s);
}

function histogram(o: SamplingOptions, draws: number, context: number[] = []): number[] {
  const h = new Array<number>(logits.length).fill(0);
  for (let step = 0; step < draws; step++) h[sampleToken(logits, context, step, o)]!++;
  return h.map((c) => c / draws);
}

test('greedy picks the argmax; repetition penalty follows HF (divide positive, multiply negative logits)', () => {
  assert.equal(sampleToken(logits, [], 0, opts({})), 3);
  // 3.0/1.2 = 2.5 < 2.9: token 5 wins once 3 has been seen.
  assert.equal(sampleToken(logits, [3], 0, opts({ repetitionPenalty: 1.2 })), 5);
  // A negative logit gets more negative: -1·2 = -2 stays last.
  assert.equal(sampleToken([-1, -1.5], [0], 0, opts({ repetitionPenalty: 2 })), 1);
});

test('temperature sampling follows softmax(z/T); a seed reproduces the same draws', () => {
  const o = opts({ temperature: 0.7, seed: 11 });
  const h = histogram(o, 20000);
  softmax(logits, 0.7).forEach((p, i) =>
    assert.ok(Math.abs(h[i]! - p) < 0.015, `token ${i}: ${h[i]} vs ${p}`),
  );
  const a = Array.from({ length: 50 }, (_, s) => sampleToken(logits, [], s, o));
  const b = Array.from({ length: 50 }, (_, s) => sampleToken(logits, [], s, o));
  assert.deepEqual(a, b);
  const c = Array.from({ length: 50 }, (_, s) => sampleToken(logits, [], s, { ...o, seed: 12 }));
  assert.notDeepEqual(a, c);
});

test('top-k, top-p and min-p keep exactly the tokens they should, renormalized', () => {
  // top-k 2: tokens 3 and 5 only, in proportion e^3 : e^2.9.
  const k2 = histogram(opts({ temperature: 1, topK: 2, seed: 1 }), 20000);
  const p35 = softmax([3.0, 2.9]);
  assert.ok(Math.abs(k2[3]! - p35[0]!) < 0.015 && Math.abs(k2[5]! - p35[1]!) < 0.015);
  assert.equal(k2[0]! + k2[1]! + k2[2]! + k2[4]!, 0);
  // top-p: the smallest set reaching p. softmax: 3→0.398, 5→0.360, 0→0.146, … → p = 0.7 keeps {3, 5}.
  const tp = histogram(opts({ temperature: 1, topP: 0.7, seed: 2 }), 5000);
  assert.equal(tp[0]! + tp[1]! + tp[2]! + tp[4]!, 0);
  assert.ok(tp[3]! > 0 && tp[5]! > 0);
  // min-p 0.3: keep tokens with p ≥ 0.3·p(3): 3, 5 and 0 (0.146/0.398 = 0.37), not 1 (0.054/0.398).
  const mp = histogram(opts({ temperature: 1, minP: 0.3, seed: 3 }), 5000);
  assert.ok(mp[0]! > 0 && mp[3]! > 0 && mp[5]! > 0);
  assert.equal(mp[1]! + mp[2]! + mp[4]!, 0);
  // top-k 1 is greedy whatever the temperature.
  assert.deepEqual(
    new Set(
      Array.from({ length: 100 }, (_, s) =>
        sampleToken(logits, [], s, opts({ temperature: 5, topK: 1 })),
      ),
    ),
    new Set([3]),
  );
});
