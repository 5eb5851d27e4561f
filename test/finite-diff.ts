// Central finite differences on ref float64 tensors (the pattern of gradcheck.test.ts, shared by the
// parameterized op suites): the scalar loss is a random projection L = Σ R ∘ output, so an op's
// backward fed dout = R must equal dL/dinput.
import type { Tensor } from '../src/tensor/tensor.js';
import { assertClose } from './util.js';

const H = 1e-6;
export const FD_TOL = { atol: 1e-6, rtol: 1e-5 };

function dot(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i]! * b[i]!;
  return s;
}

/** d loss / d input by central differences, perturbing the (host, f64) input's elements in place. */
export function numericGrad(input: Tensor, loss: () => number): Float64Array {
  const x = input.data;
  const g = new Float64Array(x.length);
  for (let i = 0; i < x.length; i++) {
    const orig = x[i]!;
    x[i] = orig + H;
    const up = loss();
    x[i] = orig - H;
    const down = loss();
    x[i] = orig;
    g[i] = (up - down) / (2 * H);
  }
  return g;
}

/** Checks analytic gradients of L = Σ R∘out (out recomputed by forward()) w.r.t. each input. */
export function checkGradients(
  what: string,
  inputs: Record<string, Tensor>,
  out: Tensor,
  forward: () => void,
  analytic: Record<string, ArrayLike<number>>,
  R: Tensor,
): void {
  const loss = () => {
    forward();
    return dot(out.data, R.data);
  };
  for (const [name, t] of Object.entries(inputs)) {
    assertClose(analytic[name]!, numericGrad(t, loss), { ...FD_TOL, what: `${what}: d/d${name}` });
  }
}
