import type { Tensor } from '../../tensor/tensor.js';
import { expectRank, expectShape, fail, ints, sameFloatType } from './check.js';

function checkIds(op: string, ids: Int32Array, vocab: number): void {
  for (let i = 0; i < ids.length; i++) {
    const id = ids[i]!;
    if (id < 0 || id >= vocab) fail(op, `id ${id} at position ${i} is outside [0, ${vocab})`);
  }
}

/** out[n, d] = table[ids[n], :]. */
export function embedding(ids: Tensor, table: Tensor, out: Tensor): void {
  const op = 'embedding';
  const I = ints(op, 'ids', ids);
  sameFloatType(op, { table, out });
  expectRank(op, 'table', table, 2);
  const [V, d] = table.shape as [number, number];
  expectShape(op, 'out', out, [ids.size, d]);
  checkIds(op, I, V);
  const T = table.data;
  const O = out.data;
  for (let n = 0; n < I.length; n++) {
    const src = I[n]! * d;
    for (let j = 0; j < d; j++) O[n * d + j] = T[src + j]!;
  }
}

/** dtable[ids[i], :] += dout[i, :] (repeated ids accumulate). */
export function embeddingBackward(ids: Tensor, dout: Tensor, dtable: Tensor): void {
  const op = 'embeddingBackward';
  const I = ints(op, 'ids', ids);
  sameFloatType(op, { dout, dtable });
  expectRank(op, 'dtable', dtable, 2);
  const [V, d] = dtable.shape as [number, number];
  expectShape(op, 'dout', dout, [ids.size, d]);
  checkIds(op, I, V);
  const D = dout.data;
  const T = dtable.data;
  for (let n = 0; n < I.length; n++) {
    const dst = I[n]! * d;
    for (let j = 0; j < d; j++) T[dst + j] = T[dst + j]! + D[n * d + j]!;
  }
}
