/**
 * The device side of the WebGPU backend: compute pipelines compiled once per kernel variant,
 * dispatches recorded into one command encoder and submitted in batches, per-dispatch parameters
 * in a uniform ring, reads through mapped staging buffers, and device errors surfaced at the next
 * read (WebGPU reports them asynchronously).
 *
 * Ordering: commands are recorded, not run, until `flush()`. Queue writes (`writeBuffer`) run
 * before any command buffer submitted after them, so a host write first flushes what was recorded
 * before it; the parameter ring is written just before its own command buffer is submitted.
 */
import { formatBytes } from '../../tensor/units.js';
import type { GpuDeviceHandle } from './gpu.js';

/** Where a tensor's bytes are: a buffer and a byte range in it. */
export interface GpuSpan {
  readonly buffer: GPUBuffer;
  readonly byteOffset: number;
  readonly byteLength: number;
}

export type WgslScalar = 'f32' | 'u32' | 'i32';

export interface KernelBinding {
  readonly name: string;
  /** Element type the shader sees: u8 tensors are bound as u32 words (their offset is in bytes). */
  readonly type: WgslScalar | 'f16' | 'atomic<u32>';
  /** Documentation only: every binding is read_write storage (see pipeline()). */
  readonly write: boolean;
}

export interface KernelParam {
  readonly name: string;
  readonly type: WgslScalar;
}

/**
 * One compute kernel: its bindings and scalar parameters generate the WGSL header
 * (`@group(0) @binding(i) var<storage, ...> name: array<type>;` and a uniform `P` whose first fields
 * are each binding's element offset `off_<name>`), `source` holds the rest (structs, helpers and
 * an entry point named `main`).
 */
export interface KernelSpec {
  /** Unique name of this variant (pipeline cache key). */
  readonly key: string;
  readonly bindings: readonly KernelBinding[];
  readonly params: readonly KernelParam[];
  readonly source: string;
  /** Extra WGSL enable directives (e.g. 'f16'). */
  readonly enables?: readonly string[];
}

const PARAM_SLOT_BYTES = 256;
const PARAM_SLOTS = 2048;
const MAX_RECORDED_DISPATCHES = 1024;

export class GpuContext {
  readonly device: GPUDevice;
  readonly limits: GPUSupportedLimits;
  readonly features: ReadonlySet<string>;
  /** Storage bindings must start at a multiple of this (usually 256 bytes). */
  readonly bindAlign: number;
  readonly maxBinding: number;
  readonly maxWorkgroups: number;

  private readonly pipelines = new Map<
    string,
    { pipeline: GPUComputePipeline; layout: GPUBindGroupLayout }
  >();
  private encoder: GPUCommandEncoder | null = null;
  private pass: GPUComputePassEncoder | null = null;
  private recorded = 0;
  private readonly paramBuffer: GPUBuffer;
  private readonly paramHost = new ArrayBuffer(PARAM_SLOT_BYTES * PARAM_SLOTS);
  private paramSlot = 0;
  private pendingDestroy: GPUBuffer[] = [];
  private deviceError: string | null = null;
  private errorScopes: Promise<GPUError | null>[] = [];
  private lost = false;
  private scratchBuffer: GPUBuffer | null = null;
  private readonly faultBuffer: GPUBuffer;
  private readonly faultTemplates: string[] = [''];

  constructor(readonly handle: GpuDeviceHandle) {
    this.device = handle.device;
    this.limits = this.device.limits;
    this.features = handle.features;
    this.bindAlign = this.limits.minStorageBufferOffsetAlignment;
    this.maxBinding = this.limits.maxStorageBufferBindingSize;
    this.maxWorkgroups = this.limits.maxComputeWorkgroupsPerDimension;
    this.paramBuffer = this.device.createBuffer({
      size: PARAM_SLOT_BYTES * PARAM_SLOTS,
      usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
      label: 'qlora params',
    });
    this.faultBuffer = this.createBuffer(16, 'faults');
    this.device.addEventListener('uncapturederror', (event) => {
      const e = (event as GPUUncapturedErrorEvent).error;
      this.deviceError ??= e.message;
    });
    void this.device.lost.then((info) => {
      this.lost = true;
      this.deviceError ??= `device lost (${info.reason}): ${info.message}`;
    });
  }

  // ---- buffers ----------------------------------------------------------------------------------

  createBuffer(bytes: number, label: string): GPUBuffer {
    const size = Math.max(16, roundUp(bytes, 16));
    if (size > this.limits.maxBufferSize) {
      throw new Error(
        `webgpu: a ${label} of ${formatBytes(bytes)} exceeds this adapter's maxBufferSize (${formatBytes(this.limits.maxBufferSize)})`,
      );
    }
    this.device.pushErrorScope('out-of-memory');
    const buffer = this.device.createBuffer({
      size,
      usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
      label,
    });
    this.errorScopes.push(this.device.popErrorScope());
    return buffer;
  }

  /** Destroys after the commands recorded so far have been submitted (they may still use it). */
  release(buffer: GPUBuffer): void {
    if (this.encoder) this.pendingDestroy.push(buffer);
    else buffer.destroy();
  }

  /**
   * A persistent device buffer for kernels' internal partial results (reductions). Recorded
   * dispatches run in order, so each user consumes it before the next one overwrites it.
   */
  scratch(bytes: number): GpuSpan {
    if (!this.scratchBuffer || this.scratchBuffer.size < bytes) {
      if (this.scratchBuffer) this.release(this.scratchBuffer);
      this.scratchBuffer = this.createBuffer(Math.max(bytes, 1 << 16), 'scratch');
    }
    return { buffer: this.scratchBuffer, byteOffset: 0, byteLength: bytes };
  }

  /**
   * Kernels cannot throw, so they report bad input (an id out of range, a label past the
   * vocabulary) by raising a fault: a code and two values in a small device buffer that every
   * read checks, throwing the registered message. Bind `faultSpan()` as \`fault\` of type
   * 'atomic<u32>' and call FAULT_WGSL's `raise(code, a, b)`; the first fault wins.
   */
  faultCode(template: string): number {
    let code = this.faultTemplates.indexOf(template);
    if (code < 0) {
      code = this.faultTemplates.length;
      this.faultTemplates.push(template);
    }
    return code;
  }

  faultSpan(): GpuSpan {
    return { buffer: this.faultBuffer, byteOffset: 0, byteLength: 16 };
  }

  // ---- recording --------------------------------------------------------------------------------

  /** Records one compute dispatch. `spans` match spec.bindings; `params` match spec.params. */
  dispatch(
    spec: KernelSpec,
    spans: readonly GpuSpan[],
    params: readonly number[],
    groups: readonly [number, number?, number?],
  ): void {
    this.checkUsable();
    if (spans.length !== spec.bindings.length)
      throw new Error(
        `webgpu ${spec.key}: ${spans.length} buffers for ${spec.bindings.length} bindings`,
      );
    if (params.length !== spec.params.length)
      throw new Error(`webgpu ${spec.key}: ${params.length} params for ${spec.params.length}`);
    const [gx, gy = 1, gz = 1] = groups;
    if (gx === 0 || gy === 0 || gz === 0) return;
    for (const g of [gx, gy, gz]) {
      if (g > this.maxWorkgroups)
        throw new Error(
          `webgpu ${spec.key}: ${g} workgroups in one dimension (limit ${this.maxWorkgroups})`,
        );
    }
    // Each binding covers [base, base + size): from the aligned start at or below the tensor (the
    // shader adds the element offset) to its end.
    const windows = spec.bindings.map((b, i) => {
      const span = spans[i]!;
      const elementBytes = b.type === 'f16' ? 2 : 4;
      const base = Math.floor(span.byteOffset / this.bindAlign) * this.bindAlign;
      const lead = span.byteOffset - base;
      if (b.type !== 'u32' && lead % elementBytes !== 0)
        throw new Error(`webgpu ${spec.key}: '${b.name}' is not ${elementBytes}-byte aligned`);
      return {
        buffer: span.buffer,
        base,
        end: base + Math.max(4, roundUp(lead + span.byteLength, 4)),
      };
    });
    // Writable bindings may not overlap in one dispatch (Dawn rejects aliasing), yet in-place ops
    // pass the same tensor twice and views of one tensor can share an aligned window: overlapping
    // bindings are merged into one binding that covers them all, read under the first one's name.
    const rep = spec.bindings.map((_, i) => i);
    // A merge grows a window, which can then overlap one found disjoint before (views packed closer
    // than the binding alignment): repeat until no two representatives overlap.
    for (let merged = true; merged;) {
      merged = false;
      for (let i = 0; i < windows.length && !merged; i++) {
        if (rep[i] !== i) continue;
        for (let j = 0; j < i; j++) {
          const a = windows[i]!;
          const c = windows[j]!;
          if (rep[j] !== j || a.buffer !== c.buffer || a.end <= c.base || c.end <= a.base) continue;
          if (spec.bindings[i]!.type !== spec.bindings[j]!.type) {
            throw new Error(
              `webgpu ${spec.key}: '${spec.bindings[i]!.name}' and '${spec.bindings[j]!.name}' overlap with different element types`,
            );
          }
          for (let m = 0; m < rep.length; m++) if (rep[m] === i) rep[m] = j;
          c.base = Math.min(c.base, a.base);
          c.end = Math.max(c.end, a.end);
          merged = true;
          break;
        }
      }
    }
    const { pipeline, layout } = this.pipeline(spec, rep);
    if (this.paramSlot === PARAM_SLOTS || this.recorded >= MAX_RECORDED_DISPATCHES) this.flush();
    const slot = this.paramSlot++;
    const u32 = new Uint32Array(this.paramHost, slot * PARAM_SLOT_BYTES, PARAM_SLOT_BYTES / 4);
    const f32 = new Float32Array(this.paramHost, slot * PARAM_SLOT_BYTES, PARAM_SLOT_BYTES / 4);
    const i32 = new Int32Array(this.paramHost, slot * PARAM_SLOT_BYTES, PARAM_SLOT_BYTES / 4);
    const entries: GPUBindGroupEntry[] = [];
    spec.bindings.forEach((b, i) => {
      const w = windows[rep[i]!]!;
      const size = w.end - w.base;
      if (size > this.maxBinding) {
        throw new Error(
          `webgpu ${spec.key}: binding '${b.name}' needs ${formatBytes(size)}, over this adapter's maxStorageBufferBindingSize (${formatBytes(this.maxBinding)})`,
        );
      }
      const lead = spans[i]!.byteOffset - w.base;
      // u32-bound u8 tensors carry a byte offset; everything else an element offset.
      u32[i] = b.type === 'u32' ? lead : lead / (b.type === 'f16' ? 2 : 4);
      if (rep[i] === i)
        entries.push({ binding: i, resource: { buffer: w.buffer, offset: w.base, size } });
    });
    spec.params.forEach((p, j) => {
      const v = params[j]!;
      const at = spec.bindings.length + j;
      if (p.type === 'f32') f32[at] = v;
      else if (p.type === 'i32') i32[at] = v;
      else u32[at] = v;
    });
    entries.push({
      binding: spec.bindings.length,
      resource: {
        buffer: this.paramBuffer,
        offset: slot * PARAM_SLOT_BYTES,
        size: paramBytes(spec),
      },
    });
    const bindGroup = this.device.createBindGroup({ layout, entries });
    const pass = this.computePass();
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, bindGroup);
    pass.dispatchWorkgroups(gx, gy, gz);
    this.recorded++;
  }

  /** Records a buffer-to-buffer copy (offsets and size multiples of 4). */
  copy(src: GpuSpan, dst: GpuSpan, bytes: number): void {
    this.checkUsable();
    const enc = this.commandEncoder();
    this.endPass();
    enc.copyBufferToBuffer(src.buffer, src.byteOffset, dst.buffer, dst.byteOffset, bytes);
    this.recorded++;
  }

  /** Submits everything recorded so far. */
  flush(): void {
    if (!this.encoder) return;
    this.endPass();
    if (this.paramSlot > 0) {
      this.device.queue.writeBuffer(
        this.paramBuffer,
        0,
        this.paramHost,
        0,
        this.paramSlot * PARAM_SLOT_BYTES,
      );
    }
    this.device.pushErrorScope('validation');
    this.device.queue.submit([this.encoder.finish()]);
    this.errorScopes.push(this.device.popErrorScope());
    this.encoder = null;
    this.recorded = 0;
    this.paramSlot = 0;
    for (const b of this.pendingDestroy) b.destroy();
    this.pendingDestroy = [];
  }

  /** Host → device. Flushes first so the write lands after the commands recorded before it. */
  write(span: GpuSpan, bytes: Uint8Array): void {
    this.checkUsable();
    this.flush();
    if (span.byteOffset % 4 !== 0) throw new Error('webgpu: writes must start 4-byte aligned');
    const n = roundUp(bytes.byteLength, 4);
    if (n === bytes.byteLength) {
      this.device.queue.writeBuffer(
        span.buffer,
        span.byteOffset,
        bytes.buffer,
        bytes.byteOffset,
        n,
      );
    } else {
      const padded = new Uint8Array(n);
      padded.set(bytes);
      this.device.queue.writeBuffer(span.buffer, span.byteOffset, padded.buffer, 0, n);
    }
  }

  /** Device → host: the bytes of a span (any alignment). Throws any fault or device error first. */
  async read(span: GpuSpan): Promise<Uint8Array> {
    this.checkUsable();
    const start = Math.floor(span.byteOffset / 4) * 4;
    const lead = span.byteOffset - start;
    const size = Math.max(4, roundUp(lead + span.byteLength, 4));
    const faultsAt = roundUp(size, 16);
    const staging = this.device.createBuffer({
      size: faultsAt + 16,
      usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
      label: 'qlora read',
    });
    const enc = this.commandEncoder();
    this.endPass();
    enc.copyBufferToBuffer(span.buffer, start, staging, 0, size);
    enc.copyBufferToBuffer(this.faultBuffer, 0, staging, faultsAt, 16);
    this.flush();
    try {
      await staging.mapAsync(GPUMapMode.READ);
    } catch (err) {
      await this.surfaceErrors();
      throw err;
    }
    // getMappedRange wants 8-byte aligned offsets: map the whole staging buffer and cut.
    const mapped = staging.getMappedRange();
    const out = new Uint8Array(mapped.slice(lead, lead + span.byteLength));
    const faults = new Uint32Array(mapped.slice(faultsAt, faultsAt + 16));
    staging.unmap();
    staging.destroy();
    await this.surfaceErrors();
    this.throwFault(faults);
    return out;
  }

  /** Waits for all submitted work and throws the first fault or device error since the last check. */
  async sync(): Promise<void> {
    await this.read(this.faultSpan());
  }

  // ---- internals --------------------------------------------------------------------------------

  private async surfaceErrors(): Promise<void> {
    const scopes = this.errorScopes;
    this.errorScopes = [];
    for (const p of scopes) {
      const e = await p;
      if (e) this.deviceError ??= e.message;
    }
    if (this.deviceError) {
      const message = this.deviceError;
      this.deviceError = null;
      throw new Error(`webgpu: ${message}`);
    }
  }

  private throwFault(faults: Uint32Array): void {
    const code = faults[0]!;
    if (code === 0) return;
    this.device.queue.writeBuffer(this.faultBuffer, 0, new Uint32Array(4));
    const ints = new Int32Array(faults.buffer);
    const template = this.faultTemplates[code] ?? `unknown fault ${code}`;
    throw new Error(
      `webgpu.${template.replace('{a}', String(ints[1])).replace('{b}', String(ints[2]))}`,
    );
  }

  private checkUsable(): void {
    if (this.lost) throw new Error(`webgpu: ${this.deviceError ?? 'device lost'}`);
  }

  private commandEncoder(): GPUCommandEncoder {
    this.encoder ??= this.device.createCommandEncoder({ label: 'qlora' });
    return this.encoder;
  }

  private computePass(): GPUComputePassEncoder {
    const enc = this.commandEncoder();
    this.pass ??= enc.beginComputePass();
    return this.pass;
  }

  private endPass(): void {
    if (this.pass) {
      this.pass.end();
      this.pass = null;
    }
  }

  private pipeline(
    spec: KernelSpec,
    rep: readonly number[],
  ): { pipeline: GPUComputePipeline; layout: GPUBindGroupLayout } {
    const aliased = rep.some((r, i) => r !== i);
    const key = aliased ? `${spec.key}|${rep.join(',')}` : spec.key;
    const hit = this.pipelines.get(key);
    if (hit) return hit;
    const code = kernelSource(spec, rep);
    const module = this.device.createShaderModule({ code, label: key });
    const entries: GPUBindGroupLayoutEntry[] = [];
    spec.bindings.forEach((_, i) => {
      if (rep[i] !== i) return;
      // Every binding is writable storage: WebGPU forbids binding one buffer both read-only and
      // writable in a dispatch, and arena tensors share buffers.
      entries.push({ binding: i, visibility: GPUShaderStage.COMPUTE, buffer: { type: 'storage' } });
    });
    entries.push({
      binding: spec.bindings.length,
      visibility: GPUShaderStage.COMPUTE,
      buffer: { type: 'uniform' },
    });
    const layout = this.device.createBindGroupLayout({ entries, label: key });
    const pipeline = this.device.createComputePipeline({
      layout: this.device.createPipelineLayout({ bindGroupLayouts: [layout] }),
      compute: { module, entryPoint: 'main' },
      label: key,
    });
    const made = { pipeline, layout };
    this.pipelines.set(key, made);
    return made;
  }
}

/** WGSL for kernels with a \`fault\` binding: records the first fault (see GpuContext.faultCode). */
export const FAULT_WGSL = `
fn raise(code: u32, a: i32, b: i32) {
  // atomicMax always lands (a weak compare-exchange may fail spuriously); the raiser that found
  // no fault before it records the values.
  if (atomicMax(&fault[0], code) == 0u) {
    atomicStore(&fault[1], bitcast<u32>(a));
    atomicStore(&fault[2], bitcast<u32>(b));
  }
}`;

/** The full WGSL of a kernel: enables, bindings, the parameter struct, then the kernel's own source. */
export function kernelSource(
  spec: KernelSpec,
  rep: readonly number[] = spec.bindings.map((_, i) => i),
): string {
  const lines: string[] = [];
  for (const e of spec.enables ?? []) lines.push(`enable ${e};`);
  spec.bindings.forEach((b, i) => {
    if (rep[i] === i)
      lines.push(`@group(0) @binding(${i}) var<storage, read_write> ${b.name}: array<${b.type}>;`);
  });
  const fields = [
    ...spec.bindings.map((b) => `off_${b.name}: u32`),
    ...spec.params.map((p) => `${p.name}: ${p.type}`),
  ];
  lines.push(`struct Params { ${fields.join(', ')}, }`);
  lines.push(`@group(0) @binding(${spec.bindings.length}) var<uniform> P: Params;`);
  let source = spec.source;
  // A merged binding: its other names read the representative's array (their offsets stay their own).
  spec.bindings.forEach((b, i) => {
    const r = rep[i]!;
    if (r !== i)
      source = source.replace(
        new RegExp(`(?<![\\w.])${b.name}(?=\\s*\\[)`, 'g'),
        spec.bindings[r]!.name,
      );
  });
  lines.push(source);
  return lines.join('\n');
}

function paramBytes(spec: KernelSpec): number {
  const n = spec.bindings.length + spec.params.length;
  if (n * 4 > PARAM_SLOT_BYTES) throw new Error(`webgpu ${spec.key}: too many parameters`);
  return roundUp(n * 4, 16);
}

export function roundUp(n: number, multiple: number): number {
  return Math.ceil(n / multiple) * multiple;
}
