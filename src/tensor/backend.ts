import type { Arena } from './arena.js';
import type { DType, HostArray } from './dtype.js';
import type { Storage, Tensor } from './tensor.js';

/**
 * A 4-bit weight in the bitsandbytes layout (docs/formats.md §2): the [rows, cols] = [out, in]
 * matrix is flattened row-major; element 2i sits in the HIGH nibble of byte i, 2i+1 in the low
 * nibble. absmax is per block of `blocksize` consecutive flat elements; with double quantization
 * the absmax values are themselves 8-bit codes:
 *   absmax[b] = nested.code[qabsmax[b]] * nested.absmax[b / nested.blocksize] + nested.offset.
 */
export interface Packed4bitWeight {
  readonly rows: number;
  readonly cols: number;
  readonly quantType: 'nf4' | 'fp4';
  readonly blocksize: number;
  /** u8 [ceil(rows*cols/2)] */
  readonly packed: Tensor;
  /** f32 [16]: value of each 4-bit code (the bnb `quant_map`). */
  readonly code: Tensor;
  /** f32 [nblocks] without double quantization; u8 [nblocks] (codes into nested.code) with it. */
  readonly absmax: Tensor;
  readonly nested: NestedAbsmax | null;
}

export interface NestedAbsmax {
  /** f32 [ceil(nblocks / blocksize)] */
  readonly absmax: Tensor;
  /** f32 [256]: the signed dynamic 8-bit map. */
  readonly code: Tensor;
  readonly blocksize: number;
  readonly offset: number;
}

export interface MatmulOptions {
  /** Use Aᵀ: a is stored [..., K, M]. */
  readonly transA?: boolean;
  /** Use Bᵀ: b is stored [..., N, K] (the `x·Wᵀ` of nn.Linear). */
  readonly transB?: boolean;
  /** out = alpha·op(A)·op(B) + beta·out. Defaults 1 and 0 (beta 0 ignores out's old contents, NaN included). */
  readonly alpha?: number;
  readonly beta?: number;
  /**
   * b is a frozen base weight (a full-precision projection or lm_head, never a LoRA factor or an
   * activation): a backend whose computeDtype is lower than f32 may round both operands to it and
   * accumulate in f32, as it does the 4-bit matmuls. Others ignore it.
   */
  readonly frozenB?: boolean;
}

export type RopeLayout = 'half' | 'interleaved';

export interface AttentionOptions {
  /** Softmax scale, usually 1/sqrt(headDim). */
  readonly scale: number;
  /**
   * Optional i32 [B, Tk] segment ids (packed sequences): query i may attend key j only when
   * seg[j] == seg[query's position]. Only valid when Tq == Tk.
   */
  readonly segmentIds?: Tensor | null;
  /**
   * Sliding-window attention: the query at absolute position p sees only keys j with
   * p - window < j ≤ p (`window` keys, its own included: the convention of Hugging Face transformers'
   * masks and llama.cpp, docs/attention.md). null or absent: every earlier key. A positive integer.
   */
  readonly window?: number | null;
  /**
   * Attention logit soft-capping (Gemma 2 `attn_logit_softcapping`): each scaled score s becomes
   * cap·tanh(s / cap) before masking and softmax; the backward pass includes its derivative. null or
   * absent: no capping. A positive finite number.
   */
  readonly softcap?: number | null;
}

/** Options of Backend.crossEntropy. */
export interface CrossEntropyOptions {
  /**
   * Final-logit soft-capping (Gemma 2 `final_logit_softcapping`): the loss is taken over
   * cap·tanh(logits / cap), and dlogits is the gradient with respect to the uncapped logits.
   * null or absent: none.
   */
  readonly softcap?: number | null;
}

export interface AdamWOptions {
  readonly lr: number;
  readonly beta1: number;
  readonly beta2: number;
  readonly eps: number;
  readonly weightDecay: number;
  /** 1-based step count, for bias correction. */
  readonly step: number;
}

/** Elements per block of 8-bit optimizer state (bitsandbytes' blockwise 8-bit optimizers). */
export const ADAMW8BIT_BLOCKSIZE = 256;

/**
 * 8-bit blockwise AdamW state of one parameter of n elements (bitsandbytes
 * `optimizer_update_8bit_blockwise`): each moment is stored as a u8 code per element into a
 * 256-entry map (the signed dynamic map for m, the unsigned one for v) times an f32 absmax per
 * block of ADAMW8BIT_BLOCKSIZE elements.
 */
export interface AdamW8bitState {
  /** u8 [n]: codes of m into qmap1. */
  readonly state1: Tensor;
  /** u8 [n]: codes of v into qmap2. */
  readonly state2: Tensor;
  /** f32 [ceil(n / 256)] */
  readonly absmax1: Tensor;
  /** f32 [ceil(n / 256)] */
  readonly absmax2: Tensor;
  /** f32 [256], ascending: the signed dynamic map (create_dynamic_map(signed=True)). */
  readonly qmap1: Tensor;
  /** f32 [256], ascending: the unsigned dynamic map. */
  readonly qmap2: Tensor;
}

export interface MemoryStats {
  /** Bytes held by this backend's long-lived and arena allocations right now. */
  readonly allocatedBytes: number;
  readonly peakBytes: number;
}

/**
 * A compute backend. Ops use destination passing: the caller (the ops layer, which owns the memory
 * plan) allocates every output tensor, so outputs can come from an arena and no op creates a
 * tensor. Kernels may still use memory of their own that is not a tensor: the native GEMM keeps
 * per-thread packed panels between calls, attention allocates its transposed K/V tiles and
 * per-thread work areas for each call, reductions a few partial sums.
 * All tensors are contiguous row-major. Unless stated, outputs must not alias inputs.
 *
 * Shapes use these letters: B batch, T sequence, H query heads, Hkv key/value heads, D head dim,
 * n rows, d features, V vocabulary.
 */
/** What the frozen-base 4-bit matmuls compute in (see Backend.computeDtype). */
export type ComputeDtype = 'f32' | 'bf16' | 'f16';

export interface Backend {
  readonly name: string;
  /** dtypes this backend computes in (ref: f32 and f64; cpu: f32). i32/u8 are storage types on all. */
  readonly floatTypes: readonly DType[];

  // ---- memory -------------------------------------------------------------------------------
  /** A long-lived, zero-filled tensor; release with dispose(). */
  zeros(shape: readonly number[], dtype?: DType): Tensor;
  /** A long-lived tensor holding a copy of `values`. */
  fromArray(values: ArrayLike<number>, shape: readonly number[], dtype?: DType): Tensor;
  /** An arena for per-step temporaries: allocation is a pointer bump, reset() recycles all of it. */
  createArena(initialBytes?: number, name?: string): Arena;
  /** A copy of a tensor's elements. */
  read(t: Tensor): Promise<HostArray>;
  /** Overwrites a tensor's elements from JS values (converted to its dtype). */
  write(t: Tensor, values: ArrayLike<number>): void;
  /** Storage for elements [offset, offset+length) of `storage` (used by Tensor.rows()). */
  sliceStorage(storage: Storage, dtype: DType, offset: number, length: number): Storage;
  memoryStats(): MemoryStats;

  // ---- elementwise and data movement ---------------------------------------------------------
  /** out[i] = value */
  fill(out: Tensor, value: number): void;
  /** dst = src (same size) */
  copy(src: Tensor, dst: Tensor): void;
  /**
   * dst[r, dstCol + j] = src[r, srcCol + j] for every row r and j < width: a block of columns of
   * src [n, a] into dst [n, b] (both float, same dtype, disjoint). Splits a fused projection's
   * output into its parts (Phi-3's qkv_proj, gate_up_proj) and joins their gradients back.
   */
  copyColumns(src: Tensor, srcCol: number, dst: Tensor, dstCol: number, width: number): void;
  /** out = a + b (same size; out may alias a or b) */
  add(a: Tensor, b: Tensor, out: Tensor): void;
  /** out = alpha·x (out may alias x) */
  scale(x: Tensor, alpha: number, out: Tensor): void;
  /** y += alpha·x (gradient accumulation) */
  axpy(alpha: number, x: Tensor, y: Tensor): void;
  /** out[0] (+)= Σ x² (accumulated in f64 per thread, summed in a fixed order); accumulate=false overwrites. */
  sumOfSquares(x: Tensor, out: Tensor, accumulate: boolean): void;
  /**
   * out[0] (+)= Σ x: small reductions that stay on the backend (a batch's loss) until one
   * read-back. Host backends sum in float64 in element order, then add to out[0] and store in its
   * dtype (ref and cpu agree to the bit); a device without f64 sums f32 partials in a fixed order.
   */
  sum(x: Tensor, out: Tensor, accumulate: boolean): void;

  // ---- matrix products -----------------------------------------------------------------------
  /**
   * out[..., M, N] = alpha·op(a)·op(b) + beta·out. a: [..., M, K] (or [..., K, M] with transA);
   * b: [..., K, N] (or [..., N, K] with transB). Batch dims of a and out must match; b either has the
   * same batch dims or is 2-D (shared by every batch).
   */
  matmul(a: Tensor, b: Tensor, out: Tensor, options?: MatmulOptions): void;
  /** out[n, rows] = x[n, cols] · dequant(w)ᵀ + beta·out. Dequantizes tile by tile; never the whole weight. */
  matmul4bit(x: Tensor, w: Packed4bitWeight, out: Tensor, beta?: number): void;
  /** dx[n, cols] = dy[n, rows] · dequant(w) + beta·dx (w is frozen: no weight gradient). */
  matmul4bitInputGrad(dy: Tensor, w: Packed4bitWeight, dx: Tensor, beta?: number): void;
  /** out[rows, cols] = dequant(w) */
  dequantize4bit(w: Packed4bitWeight, out: Tensor): void;
  /** out[n, cols] = rows ids[n] of dequant(w) (a 4-bit embedding table; ids out of range throw). */
  embedding4bit(ids: Tensor, w: Packed4bitWeight, out: Tensor): void;

  // ---- layers ----------------------------------------------------------------------------------
  /** out[n, d] = table[ids[n], :]; ids out of range throw. */
  embedding(ids: Tensor, table: Tensor, out: Tensor): void;
  /** dtable[ids[i], :] += dout[i, :] */
  embeddingBackward(ids: Tensor, dout: Tensor, dtable: Tensor): void;
  /** x [n, d]: out = x · rstd · weight, rstd[n] = 1/sqrt(mean(x²) + eps) (statistics in f32 or better). */
  rmsnorm(x: Tensor, weight: Tensor, eps: number, out: Tensor, rstd: Tensor): void;
  /** dx = ∂/∂x; dweight (+)= ∂/∂weight when given (accumulates). */
  rmsnormBackward(
    dout: Tensor,
    x: Tensor,
    weight: Tensor,
    rstd: Tensor,
    dx: Tensor,
    dweight: Tensor | null,
  ): void;
  /**
   * Rotary embedding of x [B, T, H, D] at positions (i32 [B*T]) with tables cos/sin [maxPos, D/2]
   * (frequency scaling is baked into the tables). 'half' pairs (i, i + D/2) (HF rotate_half);
   * 'interleaved' pairs (2i, 2i+1) (llama2.c, GGUF). inverse rotates by -θ: the backward pass.
   * out may alias x.
   */
  rope(
    x: Tensor,
    positions: Tensor,
    cos: Tensor,
    sin: Tensor,
    layout: RopeLayout,
    inverse: boolean,
    out: Tensor,
  ): void;
  /**
   * Causal grouped-query attention, memory-efficient (online softmax; never a full T×T matrix).
   * q [B, Tq, H, D], k/v [B, Tk, Hkv, D] with Tk ≥ Tq and H % Hkv == 0; query i sits at absolute
   * position Tk - Tq + i and sees keys j ≤ that. out [B, Tq, H, D]; lse [B, H, Tq] receives the
   * log-sum-exp of each query's scaled (and soft-capped) scores (kept for the backward pass).
   * options.window restricts each query to its last `window` keys; kernels skip key tiles that no
   * query of a tile can see, so the cost grows with T·window rather than T².
   */
  attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    out: Tensor,
    lse: Tensor,
    options: AttentionOptions,
  ): void;
  /** Gradients of attention; recomputes scores from q, k, lse. dq, dk, dv are overwritten. */
  attentionBackward(
    dout: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    out: Tensor,
    lse: Tensor,
    dq: Tensor,
    dk: Tensor,
    dv: Tensor,
    options: AttentionOptions,
  ): void;
  /** out = cap·tanh(x / cap) (soft-capping, Gemma 2's logits); out may alias x; cap > 0. */
  softcap(x: Tensor, cap: number, out: Tensor): void;
  /** dx = dout·(1 - tanh²(x / cap)): the gradient of softcap at x; dx may alias dout. */
  softcapBackward(dout: Tensor, x: Tensor, cap: number, dx: Tensor): void;
  /** out = silu(gate) · up */
  swiglu(gate: Tensor, up: Tensor, out: Tensor): void;
  /** dgate, dup from dout (dgate/dup may alias gate/up). */
  swigluBackward(dout: Tensor, gate: Tensor, up: Tensor, dgate: Tensor, dup: Tensor): void;
  /**
   * out = gelu_tanh(x), the tanh approximation of GELU (PyTorch `gelu(approximate='tanh')`, HF
   * `gelu_pytorch_tanh`): 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))). out may alias x.
   */
  geluTanh(x: Tensor, out: Tensor): void;
  /** dx = dout · gelu_tanh'(x) (dx may alias dout or x). */
  geluTanhBackward(dout: Tensor, x: Tensor, dx: Tensor): void;
  /** out = gelu_tanh(gate) · up: the GeGLU of Gemma's MLP (out may alias gate or up). */
  geglu(gate: Tensor, up: Tensor, out: Tensor): void;
  /** dgate, dup from dout (dgate/dup may alias gate/up). */
  gegluBackward(dout: Tensor, gate: Tensor, up: Tensor, dgate: Tensor, dup: Tensor): void;
  /**
   * Cross-entropy of logits [n, V] against labels i32 [n] (ignoreIndex rows count 0).
   * losses[n] = -log softmax(logits)[label] (0 when ignored). When dlogits is given it receives
   * gradScale·(softmax - onehot) (zeros for ignored rows); dlogits may alias logits.
   * Labels outside [0, V) other than ignoreIndex throw. options.softcap takes the loss over
   * cap·tanh(logits / cap) (the gradient still with respect to logits), fused so that dlogits may
   * still alias logits.
   */
  crossEntropy(
    logits: Tensor,
    labels: Tensor,
    ignoreIndex: number,
    losses: Tensor,
    dlogits: Tensor | null,
    gradScale: number,
    options?: CrossEntropyOptions,
  ): void;
  /**
   * out = x · keep / (1 - p) with keep[i] = uniform(seed, i) ≥ p (see rng.ts: the same mask on every
   * backend, so backward is the same call on dout with the same seed). out may alias x.
   */
  dropout(x: Tensor, p: number, seed: number, out: Tensor): void;

  // ---- optimizer ---------------------------------------------------------------------------------
  /** One AdamW step in place (PyTorch semantics: decoupled decay p -= lr·wd·p, then the Adam update). */
  adamw(param: Tensor, grad: Tensor, m: Tensor, v: Tensor, options: AdamWOptions): void;
  /**
   * One 8-bit blockwise AdamW step in place (bitsandbytes `kOptimizerStatic8bit2StateBlockwise`).
   * Per block: dequantize m and v (code · absmax, rounded to f32), update them in float64
   * (m = β1·m + (1-β1)·g, v = β2·v + (1-β2)·g², each rounded to f32), then
   * p += -(lr·sqrt(1-β2^t)/(1-β1^t)) · m / (sqrt(v) + eps·sqrt(1-β2^t)), then p ·= (1 - lr·wd) when wd > 0;
   * the block's new absmax is max|m| (max v), and each moment is requantized to the nearest code
   * (m keeps its sign). Elements with a non-finite gradient are skipped (p unchanged, m = v = 0).
   * The host backends (ref, cpu) give the same bits: the arithmetic is specified to the rounding in
   * float64. webgpu has no f64 and computes it in f32 (within about an ulp; see its optim.ts).
   */
  adamw8bit(param: Tensor, grad: Tensor, state: AdamW8bitState, options: AdamWOptions): void;

  // ---- optional capabilities ---------------------------------------------------------------------
  // Callers test for these, never for a backend's name. Capabilities typed by higher layers (a
  // faster host quantizer) are reached through src/backends/capabilities.ts.
  /** One line on what this backend runs on here (instruction set and threads; a device's name). */
  describe?(): string;
  /**
   * The precision of the frozen-base 4-bit matmuls (matmul4bit, matmul4bitInputGrad); absent means
   * 'f32'. 'bf16' and 'f16' round the activations and the dequantized weight to that type and
   * accumulate in f32; everything else (LoRA, norms, softmax, loss, optimizer) stays f32.
   */
  readonly computeDtype?: ComputeDtype;
  /** Returns freed heap memory to the operating system (after building a model); true when it did. */
  trimMemory?(): boolean;
}
