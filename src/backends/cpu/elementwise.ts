// STUB: to be implemented (see src/tensor/backend.ts for the contract).
import type { Tensor } from '../../tensor/tensor.js';

export function fill(_out: Tensor, _value: number): void {
  throw new Error('cpu.fill: not implemented');
}

export function copy(_src: Tensor, _dst: Tensor): void {
  throw new Error('cpu.copy: not implemented');
}

export function add(_a: Tensor, _b: Tensor, _out: Tensor): void {
  throw new Error('cpu.add: not implemented');
}

export function scale(_x: Tensor, _alpha: number, _out: Tensor): void {
  throw new Error('cpu.scale: not implemented');
}

export function axpy(_alpha: number, _x: Tensor, _y: Tensor): void {
  throw new Error('cpu.axpy: not implemented');
}

export function sumOfSquares(_x: Tensor, _out: Tensor, _accumulate: boolean): void {
  throw new Error('cpu.sumOfSquares: not implemented');
}

export function swiglu(_gate: Tensor, _up: Tensor, _out: Tensor): void {
  throw new Error('cpu.swiglu: not implemented');
}

export function swigluBackward(_dout: Tensor, _gate: Tensor, _up: Tensor, _dgate: Tensor, _dup: Tensor): void {
  throw new Error('cpu.swigluBackward: not implemented');
}

export function dropout(_x: Tensor, _p: number, _seed: number, _out: Tensor): void {
  throw new Error('cpu.dropout: not implemented');
}
