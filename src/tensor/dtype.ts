/** Element types. `f64` exists for the reference backend (finite-difference checks); `u8` holds packed 4-bit codes. */
export type DType = 'f32' | 'f64' | 'i32' | 'u8';

export type HostArray = Float32Array | Float64Array | Int32Array | Uint8Array;

export const BYTES_PER_ELEMENT: Record<DType, number> = { f32: 4, f64: 8, i32: 4, u8: 1 };

export function hostArrayFor(
  dtype: DType,
  buffer: ArrayBufferLike,
  byteOffset: number,
  length: number,
): HostArray {
  switch (dtype) {
    case 'f32':
      return new Float32Array(buffer, byteOffset, length);
    case 'f64':
      return new Float64Array(buffer, byteOffset, length);
    case 'i32':
      return new Int32Array(buffer, byteOffset, length);
    case 'u8':
      return new Uint8Array(buffer, byteOffset, length);
  }
}

export function newHostArray(dtype: DType, length: number): HostArray {
  switch (dtype) {
    case 'f32':
      return new Float32Array(length);
    case 'f64':
      return new Float64Array(length);
    case 'i32':
      return new Int32Array(length);
    case 'u8':
      return new Uint8Array(length);
  }
}

export function dtypeOf(a: HostArray): DType {
  if (a instanceof Float32Array) return 'f32';
  if (a instanceof Float64Array) return 'f64';
  if (a instanceof Int32Array) return 'i32';
  return 'u8';
}

export function shapeSize(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) {
    if (!Number.isInteger(d) || d < 0) throw new Error(`invalid shape [${shape.join(', ')}]`);
    n *= d;
  }
  return n;
}

export function shapeString(shape: readonly number[]): string {
  return `[${shape.join(', ')}]`;
}
