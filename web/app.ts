/**
 * The page: file pickers, options, the data and plan views, the live loss chart, samples and
 * downloads. All work happens in the worker (worker.ts); this file only talks to it.
 */
import { lossCurveSvg } from '../src/train/plot.js';
import type { DataOptions, ModelFile, Reply, Request, RunOptions } from './protocol.js';

const $ = <T extends HTMLElement = HTMLElement>(id: string) => document.getElementById(id) as T;
const input = (id: string) => $<HTMLInputElement>(id);

const worker = new Worker(new URL('./worker.js', import.meta.url), { type: 'module' });
const send = (m: Request) => worker.postMessage(m);

/** ?backend=ref runs the plain-TypeScript backend on the CPU (slow; for checking the app without a GPU). */
const BACKEND: RunOptions['backend'] =
  new URLSearchParams(location.search).get('backend') === 'ref' ? 'ref' : 'webgpu';

const history = { train: [] as [number, number][], eval: [] as [number, number][] };
let haveGpu = false;
let haveModel = false;
let haveData = false;
/** A data file was picked (it may have been picked before the model, which tokenizes it). */
let dataPicked = false;
let running = false;
let resumableRun: { step: number; model: string; data: string } | null = null;
const downloadUrls: string[] = [];

function dataOptions(): DataOptions {
  return {
    seqLen: Number(input('seq-len').value),
    format: $<HTMLSelectElement>('format').value as DataOptions['format'],
    columns: input('columns').value,
    template: input('template').value.replace(/\\n/g, '\n').replace(/\\t/g, '\t'),
    trainOnPrompt: input('train-on-prompt').checked,
    validFraction: 0.1,
    seed: 42,
  };
}

function runOptions(): RunOptions {
  return {
    ...dataOptions(),
    rank: Number(input('rank').value),
    alpha: Number(input('alpha').value),
    lr: Number(input('lr').value),
    steps: Number(input('steps').value),
    epochs: Number(input('epochs').value),
    batchSize: Number(input('batch').value),
    evalEvery: Number(input('eval-every').value),
    saveEvery: Number(input('save-every').value),
    quantizeEmbeddingAndHead: input('quantize-all').checked,
    samplePrompt: input('sample-prompt').value,
    sampleTokens: Number(input('sample-tokens').value),
    backend: BACKEND,
  };
}

function refreshButtons(): void {
  const ready = (haveGpu || BACKEND === 'ref') && haveModel && haveData && !running;
  $<HTMLButtonElement>('train').disabled = !ready;
  $<HTMLButtonElement>('resume').disabled = !ready || resumableRun === null;
  $<HTMLButtonElement>('stop').disabled = !running;
  $<HTMLButtonElement>('reinspect').disabled = !haveModel || !haveData || running;
}

function setText(id: string, text: string, cls = 'note'): void {
  const el = $(id);
  el.textContent = text;
  el.className = cls;
}

function drawChart(): void {
  const svg = lossCurveSvg(
    [
      { label: 'train loss', color: '#1f77b4', points: history.train },
      { label: 'eval loss', color: '#d62728', points: history.eval },
    ],
    'loss',
  );
  const chart = $('chart');
  chart.innerHTML = svg;
  // The numbers behind the curve, for scripts and tests.
  chart.dataset.train = JSON.stringify(history.train);
  chart.dataset.eval = JSON.stringify(history.eval);
}

function duration(s: number): string {
  if (!Number.isFinite(s)) return '–';
  if (s < 60) return `${Math.round(s)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
  return `${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} min`;
}

function planAgain(): void {
  if (haveModel && (haveGpu || BACKEND === 'ref')) send({ type: 'plan', options: runOptions() });
}

function showInspect(view: Extract<Reply, { type: 'inspect' }>['view']): void {
  const box = $('inspect');
  box.replaceChildren();
  const pre = document.createElement('pre');
  pre.textContent = view.lines.join('\n');
  box.append(pre);
  const legend = document.createElement('p');
  legend.className = 'note';
  legend.innerHTML =
    'First examples: <span class="loss">blue text carries loss</span>, <span class="noloss">grey text does not</span>.';
  box.append(legend);
  for (const ex of view.examples) {
    const div = document.createElement('div');
    div.className = 'example';
    for (const seg of ex) {
      const span = document.createElement('span');
      span.className = seg.loss ? 'loss' : 'noloss';
      span.textContent = seg.text;
      div.append(span);
    }
    box.append(div);
  }
  box.dataset.format = view.format;
}

function showDownloads(files: readonly { name: string; bytes: Uint8Array }[]): void {
  for (const u of downloadUrls.splice(0)) URL.revokeObjectURL(u);
  const box = $('downloads');
  box.replaceChildren();
  const title = document.createElement('h3');
  title.textContent = 'Download';
  box.append(title);
  for (const f of files) {
    const url = URL.createObjectURL(new Blob([f.bytes as BlobPart]));
    downloadUrls.push(url);
    const a = document.createElement('a');
    a.href = url;
    a.download = f.name;
    a.id = `download-${f.name.replace(/[^a-z0-9]+/gi, '-')}`;
    a.textContent = `${f.name} (${f.bytes.byteLength < 2 ** 20 ? `${(f.bytes.byteLength / 1024).toFixed(1)} KiB` : `${(f.bytes.byteLength / 2 ** 20).toFixed(1)} MiB`})`;
    box.append(a);
  }
  const note = document.createElement('p');
  note.className = 'note';
  note.textContent =
    'adapter_model.safetensors + adapter_config.json form a PEFT adapter folder (qlora generate -a, PEFT, vLLM); adapter.gguf is the same adapter for llama.cpp / Ollama (--lora).';
  box.append(note);
}

worker.onmessage = (e: MessageEvent<Reply>) => {
  const m = e.data;
  switch (m.type) {
    case 'gpu':
      if (m.ok) {
        haveGpu = true;
        const a = m.adapter;
        setText(
          'gpu',
          `WebGPU: ${a.description || a.vendor || 'adapter'}${a.isFallback ? ' (software fallback: correct but slow)' : ''} · max buffer ${(a.limits.maxBufferSize! / 2 ** 20).toFixed(0)} MiB · max binding ${(a.limits.maxStorageBufferBindingSize! / 2 ** 20).toFixed(0)} MiB · ${a.features.includes('shader-f16') ? 'f16' : 'no f16'}`,
        );
        $('gpu').dataset.ready = 'true';
      } else {
        setText('gpu', m.message, 'error');
        $('gpu').dataset.ready = 'false';
      }
      break;
    case 'model': {
      haveModel = true;
      const s = m.summary;
      setText(
        'model-summary',
        `${s.name}: ${s.architecture} (${s.source}), ${s.layers} layers, hidden ${s.hidden}, vocab ${s.vocab}, ${(s.parameters / 1e6).toFixed(2)}M parameters; tokenizer ${s.tokenizer}`,
        'ok',
      );
      planAgain();
      if (dataPicked) send({ type: 'inspect', options: dataOptions() });
      break;
    }
    case 'inspect':
      haveData = true;
      showInspect(m.view);
      break;
    case 'plan': {
      const box = $('plan');
      box.replaceChildren();
      const verdict = document.createElement('p');
      verdict.className = m.plan.fits ? 'ok' : 'error';
      verdict.textContent = m.plan.fits
        ? 'Fits this GPU.'
        : `Does not fit this GPU: ${m.plan.reasons.join('; ')}`;
      const pre = document.createElement('pre');
      pre.textContent = m.plan.lines.join('\n');
      box.append(verdict, pre);
      box.dataset.fits = String(m.plan.fits);
      break;
    }
    case 'resumable':
      resumableRun = m.run;
      $('resume').title = m.run
        ? `continue ${m.run.model} on ${m.run.data} from step ${m.run.step}`
        : '';
      break;
    case 'status':
      setText('status', m.text);
      break;
    case 'started':
      history.train = [...m.history.train];
      history.eval = [...m.history.eval];
      drawChart();
      setText(
        'progress',
        m.resumedAt > 0
          ? `resumed at step ${m.resumedAt} of ${m.maxSteps}`
          : `0 of ${m.maxSteps} steps`,
      );
      break;
    case 'sample':
      $(`sample-${m.when}`).textContent = m.text;
      break;
    case 'step': {
      if (!m.m.skipped) history.train.push([m.m.step, m.m.loss]);
      drawChart();
      const eta = ((m.maxSteps - m.m.step) * m.m.elapsedSeconds) / Math.max(m.m.step, 1);
      setText(
        'progress',
        `step ${m.m.step} of ${m.maxSteps} · loss ${m.m.loss.toFixed(4)} · ${m.m.tokensPerSecond.toFixed(m.m.tokensPerSecond < 10 ? 2 : 0)} tokens/s · ETA ${duration(eta)}`,
      );
      $('progress').dataset.step = String(m.m.step);
      break;
    }
    case 'eval':
      history.eval.push([m.m.step, m.m.evalLoss]);
      drawChart();
      break;
    case 'checkpoint':
      setText(
        'status',
        `checkpoint at step ${m.step} saved in the browser's storage (Resume continues from it)`,
      );
      break;
    case 'done':
      running = false;
      showDownloads(m.files);
      setText(
        'status',
        m.stoppedBy === 'interrupt'
          ? `stopped at step ${m.steps}; Resume continues from there`
          : `done: ${m.steps} steps`,
      );
      $('train-section').dataset.done = m.stoppedBy;
      refreshButtons();
      break;
    case 'error':
      if (m.during === 'train') running = false;
      setText(
        m.during === 'train'
          ? 'status'
          : m.during === 'model'
            ? 'model-summary'
            : m.during === 'plan'
              ? 'plan'
              : m.during === 'gpu'
                ? 'gpu'
                : 'status',
        `Error (${m.during}): ${m.message}`,
        'error',
      );
      if (m.during === 'data' || m.during === 'inspect') {
        $('inspect').textContent = `Error: ${m.message}`;
        $('inspect').className = 'error';
      }
      break;
  }
  refreshButtons();
};

input('model-file').addEventListener('change', () => {
  const f = input('model-file').files?.[0];
  if (!f) return;
  haveModel = false;
  const files: ModelFile[] = [{ path: f.name, file: f }];
  send({ type: 'model', files, folder: null });
});

input('model-folder').addEventListener('change', () => {
  const list = [...(input('model-folder').files ?? [])];
  if (list.length === 0) return;
  haveModel = false;
  // webkitRelativePath is "folder/file": keep the folder so the worker sees one HF folder.
  const files: ModelFile[] = list.map((f) => ({ path: f.webkitRelativePath || f.name, file: f }));
  const folder = (files[0]!.path.includes('/') ? files[0]!.path.split('/')[0] : null) ?? '';
  send({
    type: 'model',
    files: folder ? files : files.map((f) => ({ path: `model/${f.path}`, file: f.file })),
    folder: folder || 'model',
  });
});

input('data-file').addEventListener('change', () => {
  const f = input('data-file').files?.[0];
  if (!f) return;
  haveData = false;
  dataPicked = true;
  $('inspect').className = '';
  $('inspect').textContent = `reading ${f.name}…`;
  send({ type: 'data', file: f, options: dataOptions() });
});

$('reinspect').addEventListener('click', () => send({ type: 'inspect', options: dataOptions() }));
for (const id of ['rank', 'alpha', 'batch', 'seq-len', 'steps', 'epochs', 'lr'])
  input(id).addEventListener('change', planAgain);
// The data view depends on the sequence length (over-long examples, packing).
input('seq-len').addEventListener('change', () => {
  if (haveModel && dataPicked) send({ type: 'inspect', options: dataOptions() });
});

function start(resume: boolean): void {
  running = true;
  // A resumed run keeps the before-sample of the run it continues.
  for (const id of resume
    ? ['sample-after', 'downloads']
    : ['sample-before', 'sample-after', 'downloads'])
    $(id).replaceChildren();
  delete $('train-section').dataset.done;
  history.train = [];
  history.eval = [];
  drawChart();
  refreshButtons();
  send({ type: 'train', options: runOptions(), resume });
}

$('train').addEventListener('click', () => start(false));
$('resume').addEventListener('click', () => start(true));
$('stop').addEventListener('click', () => {
  send({ type: 'stop' });
  setText('status', 'stopping after this step (a checkpoint is written first)…');
});

send({ type: 'gpu' });
refreshButtons();
