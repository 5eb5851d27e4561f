import type { Tensor } from '../../tensor/tensor.js';
import { expectRank, expectShape, f32, i32, noAlias, callNative } from './checks.js';
import { kernel } from './native.js';

type Embedding = (
  ids: Int32Array,
  table: Float32Array,
  out: Float32Array,
  n: number,
  vocab: number,
  d: number,
) => void;

const embeddingF32 = kernel<Embedding>('embeddingF32');
const embeddingBackwardF32 = kernel<Embedding>('embeddingBackwardF32');

function tableDims(op: string, name: string, table: Tensor): [number, number] {
  expectRank(op, name, table, 2);
  return [table.shape[0]!, table.shape[1]!];
}

/** out[n, d] = table[ids[n], :]; ids out of range throw (checked natively before any write). */
export function embedding(ids: Tensor, table: Tensor, out: Tensor): void {
  const op = 'embedding';
  const idArray = i32(op, 'ids', ids);
  const [vocab, d] = tableDims(op, 'table', table);
  expectShape(op, 'out', out, [ids.size, d]);
  noAlias(op, 'out and table', out, table);
  callNative(op, () =>
    embeddingF32(idArray, f32(op, 'table', table), f32(op, 'out', out), ids.size, vocab, d),
  );
}

/** dtable[ids[i], :] += dout[i, :] (rows in order, so repeated ids accumulate deterministically). */
export function embeddingBackward(ids: Tensor, dout: Tensor, dtable: Tensor): void {
  const op = 'embeddingBackward';
  const idArray = i32(op, 'ids', ids);
  const [vocab, d] = tableDims(op, 'dtable', dtable);
  expectShape(op, 'dout', dout, [ids.size, d]);
  noAlias(op, 'dtable and dout', dtable, dout);
  callNative(op, () =>
    embeddingBackwardF32(
      idArray,
      f32(op, 'dout', dout),
      f32(op, 'dtable', dtable),
      ids.size,
      vocab,
      d,
    ),
  );
}
