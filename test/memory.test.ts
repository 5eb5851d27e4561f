// Memory stability of the cpu backend over a training-like loop: 200 steps of a small transformer
// block (embedding → rmsnorm → q/k/v projections → rope → attention → dropout → output projection →
// SwiGLU MLP → vocabulary projection → cross-entropy, then the full backward and AdamW), with every
// temporary taken from one arena that is reset after each step. After warm-up the arena must stop
// growing, the native allocator's live bytes must be exactly flat, and process RSS must stay flat.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { getBackend } from '../src/backends/index.js';
import { ropeTables } from '../src/backends/rope-tables.js';
import type { Backend } from '../src/tensor/backend.js';
import type { Tensor } from '../src/tensor/tensor.js';
import { randn, rng } from './util.js';

const B = 2;
const T = 48;
const n = B * T;
const d = 64;
const H = 4;
const Hkv = 2;
const D = 16;
const F = 96;
const V = 97;

interface Param {
  w: Tensor;
  grad: Tensor;
  m: Tensor;
  v: Tensor;
}

function param(
  be: Backend,
  shape: number[],
  seed: number,
  scale: number,
  init?: Float32Array,
): Param {
  const size = shape.reduce((a, b) => a * b, 1);
  return {
    w: be.fromArray(init ?? randn(size, seed, scale), shape),
    grad: be.zeros(shape),
    m: be.zeros(shape),
    v: be.zeros(shape),
  };
}

test('cpu: 200 training-like steps keep arena, native memory and RSS flat', async () => {
  const be = await getBackend('cpu');
  const baseline = be.memoryStats().allocatedBytes;
  const p = {
    emb: param(be, [V, d], 1, 0.5),
    norm: param(be, [d], 2, 0, new Float32Array(d).fill(1)),
    wq: param(be, [H * D, d], 3, 0.1),
    wk: param(be, [Hkv * D, d], 4, 0.1),
    wv: param(be, [Hkv * D, d], 5, 0.1),
    wo: param(be, [d, H * D], 6, 0.1),
    wgate: param(be, [F, d], 7, 0.1),
    wup: param(be, [F, d], 8, 0.1),
    wdown: param(be, [d, F], 9, 0.1),
    head: param(be, [V, d], 10, 0.1),
  };
  const tables = ropeTables(D, T, 10000);
  const cos = be.fromArray(tables.cos, [T, D / 2]);
  const sin = be.fromArray(tables.sin, [T, D / 2]);
  const r = rng(11);
  const tokens = Int32Array.from({ length: n + 1 }, () => Math.floor(r() * V));
  const ids = be.fromArray(tokens.subarray(0, n), [n], 'i32');
  const labelValues = Int32Array.from(tokens.subarray(1, n + 1));
  for (let b = 0; b < B; b++) labelValues[b * T + T - 1] = -100; // no next token across rows
  const labels = be.fromArray(labelValues, [n], 'i32');
  const positions = be.fromArray(
    Int32Array.from({ length: n }, (_, i) => i % T),
    [n],
    'i32',
  );
  const arena = be.createArena(0, 'step');
  const attn = { scale: 1 / Math.sqrt(D) };
  const tB = { transB: true };
  const acc = { beta: 1 };

  const losses: number[] = [];
  let capacityAfterWarmup = 0;
  let allocatedAfterWarmup = 0;
  let rssAtStep20 = 0;
  for (let step = 1; step <= 200; step++) {
    const a = (shape: number[]) => arena.alloc(shape);
    // ---- forward
    const x = a([n, d]);
    be.embedding(ids, p.emb.w, x);
    const h = a([n, d]);
    const rstd = a([n]);
    be.rmsnorm(x, p.norm.w, 1e-5, h, rstd);
    const q = a([B, T, H, D]);
    const k = a([B, T, Hkv, D]);
    const v = a([B, T, Hkv, D]);
    be.matmul(h, p.wq.w, q.view([n, H * D]), tB);
    be.matmul(h, p.wk.w, k.view([n, Hkv * D]), tB);
    be.matmul(h, p.wv.w, v.view([n, Hkv * D]), tB);
    be.rope(q, positions, cos, sin, 'half', false, q);
    be.rope(k, positions, cos, sin, 'half', false, k);
    const att = a([B, T, H, D]);
    const lse = a([B, H, T]);
    be.attention(q, k, v, att, lse, attn);
    const attDrop = a([n, H * D]);
    be.dropout(att.view([n, H * D]), 0.1, step, attDrop);
    const o = a([n, d]);
    be.matmul(attDrop, p.wo.w, o, tB);
    const r1 = a([n, d]);
    be.add(x, o, r1);
    const gate = a([n, F]);
    const up = a([n, F]);
    be.matmul(r1, p.wgate.w, gate, tB);
    be.matmul(r1, p.wup.w, up, tB);
    const act = a([n, F]);
    be.swiglu(gate, up, act);
    const r2 = a([n, d]);
    be.matmul(act, p.wdown.w, r2, tB);
    be.add(r1, r2, r2);
    const logits = a([n, V]);
    be.matmul(r2, p.head.w, logits, tB);
    const loss = a([n]);
    const counted = labelValues.filter((y) => y !== -100).length;
    be.crossEntropy(logits, labels, -100, loss, logits, 1 / counted); // dlogits overwrite logits
    let total = 0;
    for (const l of loss.data) total += l;
    losses.push(total / counted);

    // ---- backward (gradients of the mean loss)
    for (const prm of Object.values(p)) be.fill(prm.grad, 0);
    const dr2 = a([n, d]);
    be.matmul(logits, p.head.w, dr2);
    be.matmul(logits, r2, p.head.grad, { transA: true, ...acc });
    const dact = a([n, F]);
    be.matmul(dr2, p.wdown.w, dact);
    be.matmul(dr2, act, p.wdown.grad, { transA: true, ...acc });
    be.swigluBackward(dact, gate, up, gate, up); // gate/up now hold dgate/dup
    const dr1 = a([n, d]);
    be.copy(dr2, dr1);
    be.matmul(gate, p.wgate.w, dr1, acc);
    be.matmul(up, p.wup.w, dr1, acc);
    be.matmul(gate, r1, p.wgate.grad, { transA: true, ...acc });
    be.matmul(up, r1, p.wup.grad, { transA: true, ...acc });
    const dattDrop = a([n, H * D]);
    be.matmul(dr1, p.wo.w, dattDrop);
    be.matmul(dr1, attDrop, p.wo.grad, { transA: true, ...acc });
    const datt = a([B, T, H, D]);
    be.dropout(dattDrop, 0.1, step, datt.view([n, H * D])); // same mask as the forward
    const dq = a([B, T, H, D]);
    const dk = a([B, T, Hkv, D]);
    const dv = a([B, T, Hkv, D]);
    be.attentionBackward(datt, q, k, v, att, lse, dq, dk, dv, attn);
    be.rope(dq, positions, cos, sin, 'half', true, dq);
    be.rope(dk, positions, cos, sin, 'half', true, dk);
    const dh = a([n, d]);
    be.matmul(dq.view([n, H * D]), p.wq.w, dh);
    be.matmul(dk.view([n, Hkv * D]), p.wk.w, dh, acc);
    be.matmul(dv.view([n, Hkv * D]), p.wv.w, dh, acc);
    be.matmul(dq.view([n, H * D]), h, p.wq.grad, { transA: true, ...acc });
    be.matmul(dk.view([n, Hkv * D]), h, p.wk.grad, { transA: true, ...acc });
    be.matmul(dv.view([n, Hkv * D]), h, p.wv.grad, { transA: true, ...acc });
    const dx = a([n, d]);
    be.rmsnormBackward(dh, x, p.norm.w, rstd, dx, p.norm.grad);
    be.axpy(1, dr1, dx); // the residual path
    be.embeddingBackward(ids, dx, p.emb.grad);

    // ---- global gradient norm and AdamW
    const sq = a([1]);
    be.fill(sq, 0);
    for (const prm of Object.values(p)) be.sumOfSquares(prm.grad, sq, true);
    assert.ok(Number.isFinite(sq.data[0]!), `finite gradient norm at step ${step}`);
    for (const prm of Object.values(p)) {
      be.adamw(prm.w, prm.grad, prm.m, prm.v, {
        lr: 3e-3,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weightDecay: 0.01,
        step,
      });
    }
    arena.reset();

    if (step === 3) {
      capacityAfterWarmup = arena.capacity;
      allocatedAfterWarmup = be.memoryStats().allocatedBytes;
    }
    if (step === 20) rssAtStep20 = process.memoryUsage().rss;
  }
  const rssAtStep200 = process.memoryUsage().rss;

  assert.equal(arena.capacity, capacityAfterWarmup, 'arena capacity stops growing after warm-up');
  assert.equal(
    be.memoryStats().allocatedBytes,
    allocatedAfterWarmup,
    'native allocated bytes are flat',
  );
  const slack = 16 * 1024 * 1024;
  assert.ok(
    rssAtStep200 - rssAtStep20 < slack,
    `RSS grew by ${((rssAtStep200 - rssAtStep20) / 1048576).toFixed(1)} MiB between steps 20 and 200`,
  );
  // The loop really trains (the backward wiring is coherent): the loss on the fixed batch falls.
  assert.ok(losses[199]! < 0.5 * losses[0]!, `loss ${losses[0]} → ${losses[199]}`);

  arena.dispose();
  for (const prm of Object.values(p)) for (const t of [prm.w, prm.grad, prm.m, prm.v]) t.dispose();
  for (const t of [cos, sin, ids, labels, positions]) t.dispose();
  assert.equal(be.memoryStats().allocatedBytes, baseline, 'everything is released');
});
