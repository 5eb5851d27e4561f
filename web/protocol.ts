/** Messages between the page (app.ts) and the training worker (worker.ts). */
import type { AdapterSummary } from '../src/backends/webgpu/gpu.js';
import type { EvalMetrics, StepMetrics } from '../src/train/trainer.js';

export interface DataOptions {
  readonly seqLen: number;
  readonly format: 'auto' | 'text' | 'completion' | 'alpaca' | 'chat';
  /** e.g. "prompt=question,completion=answer" */
  readonly columns: string;
  /** Prompt template with {column} placeholders ('' = none). */
  readonly template: string;
  readonly trainOnPrompt: boolean;
  readonly validFraction: number;
  readonly seed: number;
}

export interface RunOptions extends DataOptions {
  readonly rank: number;
  readonly alpha: number;
  readonly lr: number;
  /** Optimizer steps; 0 = use epochs. */
  readonly steps: number;
  readonly epochs: number;
  readonly batchSize: number;
  readonly evalEvery: number;
  readonly saveEvery: number;
  /** Embedding table and lm_head in 4-bit too (the CLI's --quantize-embeddings --quantize-head): 8× smaller, so bigger vocabularies fit one GPU buffer. */
  readonly quantizeEmbeddingAndHead: boolean;
  readonly samplePrompt: string;
  readonly sampleTokens: number;
  /** 'webgpu'; 'ref' (plain TypeScript on the CPU, page URL ?backend=ref) checks the app without a GPU. */
  readonly backend: 'webgpu' | 'ref';
}

export interface ModelFile {
  /** Path inside the picked folder ('config.json', 'model.safetensors') or the file's name. */
  readonly path: string;
  readonly file: File;
}

export type Request =
  | { readonly type: 'gpu' }
  | { readonly type: 'model'; readonly files: readonly ModelFile[]; readonly folder: string | null }
  | { readonly type: 'data'; readonly file: File; readonly options: DataOptions }
  | { readonly type: 'inspect'; readonly options: DataOptions }
  | { readonly type: 'plan'; readonly options: RunOptions }
  | { readonly type: 'train'; readonly options: RunOptions; readonly resume: boolean }
  | { readonly type: 'stop' };

export interface ModelSummary {
  readonly name: string;
  readonly source: string;
  readonly architecture: string;
  readonly layers: number;
  readonly hidden: number;
  readonly vocab: number;
  readonly parameters: number;
  readonly tokenizer: string;
}

export interface InspectSegment {
  readonly text: string;
  readonly loss: boolean;
}

export interface InspectView {
  readonly file: string;
  readonly format: string;
  readonly formatNote: string;
  readonly lines: readonly string[];
  readonly examples: readonly (readonly InspectSegment[])[];
  readonly trainExamples: number;
  readonly validExamples: number;
  readonly batchesPerEpoch: number;
}

export interface PlanView {
  readonly fits: boolean;
  readonly lines: readonly string[];
  readonly reasons: readonly string[];
}

export interface OutputFile {
  readonly name: string;
  readonly bytes: Uint8Array;
}

export interface Resumable {
  readonly step: number;
  readonly model: string;
  readonly data: string;
}

export type Reply =
  | { readonly type: 'gpu'; readonly ok: true; readonly adapter: AdapterSummary }
  | { readonly type: 'gpu'; readonly ok: false; readonly message: string }
  | { readonly type: 'model'; readonly summary: ModelSummary }
  | { readonly type: 'inspect'; readonly view: InspectView }
  | { readonly type: 'plan'; readonly plan: PlanView }
  | { readonly type: 'resumable'; readonly run: Resumable | null }
  | { readonly type: 'status'; readonly text: string }
  | {
      readonly type: 'started';
      readonly maxSteps: number;
      readonly resumedAt: number;
      readonly history: { train: [number, number][]; eval: [number, number][] };
    }
  | { readonly type: 'sample'; readonly when: 'before' | 'after'; readonly text: string }
  | { readonly type: 'step'; readonly m: StepMetrics; readonly maxSteps: number }
  | { readonly type: 'eval'; readonly m: EvalMetrics }
  | { readonly type: 'checkpoint'; readonly step: number }
  | {
      readonly type: 'done';
      readonly stoppedBy: string;
      readonly steps: number;
      readonly files: readonly OutputFile[];
    }
  | { readonly type: 'error'; readonly during: string; readonly message: string };
