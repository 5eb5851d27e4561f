// The Backend is the only door to tensor memory: no code above src/backends (and src/tensor)
// touches a Tensor's storage synchronously (`.data`, `.storage`), none imports a particular
// backend's modules, and optional abilities are asked of the backend, never inferred from its name.
import assert from 'node:assert/strict';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';
import { getBackend } from '../src/backends/index.js';
import { hasHostQuantizer, type HostQuantize4bit } from '../src/backends/capabilities.js';
import { type BuildConfig, buildLlama } from '../src/models/build.js';
import { syntheticSource } from '../src/models/synthetic.js';
import { quantize4bit } from '../src/quant/quantize4bit.js';
import type { Backend } from '../src/tensor/backend.js';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');

/** Files of src/ above the backends: everything but src/backends and src/tensor. */
function isAboveBackends(file: string): boolean {
  const rel = path.relative(root, file).split(path.sep).join('/');
  return (
    rel.startsWith('src/') && !rel.startsWith('src/backends/') && !rel.startsWith('src/tensor/')
  );
}

const program = (() => {
  const config = ts.readConfigFile(path.join(root, 'tsconfig.json'), ts.sys.readFile);
  const parsed = ts.parseJsonConfigFileContent(config.config, ts.sys, root);
  return ts.createProgram(
    parsed.fileNames.filter((f) => f.startsWith(path.join(root, 'src') + path.sep)),
    parsed.options,
  );
})();
const sources = program.getSourceFiles().filter((sf) => isAboveBackends(sf.fileName));

test("no code above src/backends reads a Tensor's storage synchronously (.data / .storage)", () => {
  assert.ok(sources.length > 50, `found only ${sources.length} source files`);
  const checker = program.getTypeChecker();
  const hits: string[] = [];
  for (const sf of sources) {
    const visit = (node: ts.Node): void => {
      if (
        ts.isPropertyAccessExpression(node) &&
        (node.name.text === 'data' || node.name.text === 'storage')
      ) {
        const type = checker.getTypeAtLocation(node.expression).getNonNullableType();
        // The Tensor class of src/tensor/tensor.ts (not data rows or parsed results that have a `data` field).
        const decl = type.getSymbol()?.declarations?.[0];
        if (
          type.getSymbol()?.getName() === 'Tensor' &&
          decl &&
          decl.getSourceFile().fileName.endsWith(path.join('src', 'tensor', 'tensor.ts'))
        ) {
          const { line } = sf.getLineAndCharacterOfPosition(node.getStart());
          hits.push(`${path.relative(root, sf.fileName)}:${line + 1}: ${node.getText()}`);
        }
      }
      ts.forEachChild(node, visit);
    };
    visit(sf);
  }
  assert.deepEqual(hits, [], 'use `await t.read()` or a backend op instead');
});

test("no code above src/backends imports a particular backend's modules (only src/backends/*.ts)", () => {
  const hits: string[] = [];
  for (const sf of sources) {
    const visit = (node: ts.Node): void => {
      const spec =
        ts.isImportDeclaration(node) || ts.isExportDeclaration(node)
          ? node.moduleSpecifier
          : ts.isCallExpression(node) && node.expression.kind === ts.SyntaxKind.ImportKeyword
            ? node.arguments[0]
            : undefined;
      if (spec && ts.isStringLiteral(spec) && /(^|\/)backends\/[^/]+\//.test(spec.text)) {
        hits.push(`${path.relative(root, sf.fileName)}: ${spec.text}`);
      }
      ts.forEachChild(node, visit);
    };
    visit(sf);
  }
  assert.deepEqual(hits, []);
});

test("buildLlama quantizes with the backend's own quantizer when it offers one, whatever its name", async () => {
  const ref = await getBackend('ref');
  const cpu = await getBackend('cpu');
  assert.equal(hasHostQuantizer(cpu), true);
  assert.equal(hasHostQuantizer(ref), false);
  // The reference backend under another name, offering a quantizer that counts its calls.
  let calls = 0;
  const counting: HostQuantize4bit = (values, options) => {
    calls++;
    return quantize4bit(values, options);
  };
  const renamed = Object.assign(
    Object.create(Object.getPrototypeOf(ref) as object) as Backend,
    ref,
    { name: 'renamed', quantize4bitHost: counting },
  );
  const config: BuildConfig = {
    vocabSize: 32,
    hiddenSize: 16,
    intermediateSize: 24,
    numLayers: 1,
    numHeads: 2,
    numKvHeads: 1,
    headDim: 8,
    rmsNormEps: 1e-5,
    ropeTheta: 10000,
    ropeScaling: null,
    maxPositionEmbeddings: 16,
    tieWordEmbeddings: false,
    attentionBias: false,
  };
  const model = await buildLlama(config, syntheticSource(config, 5), {
    backend: renamed,
    quantization: { quantType: 'nf4', blocksize: 64, doubleQuant: true },
  });
  assert.equal(calls, 7, 'q, k, v, o, gate, up, down of the one layer');
  model.dispose();
});
