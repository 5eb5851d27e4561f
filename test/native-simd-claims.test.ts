// What the native addon says about its instruction sets must be true of its kernels: every level
// simdLevel() can report, and every step of binding.gyp's fallback chain, has a branch in the
// kernels (vec.h for the elementwise/attention kernels, gemm.h for GEMM). Issue 15 found "neon"
// reported and documented while no NEON kernel existed.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { native } from '../src/backends/cpu/native.js';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const read = (rel: string): string => fs.readFileSync(path.join(root, rel), 'utf8');
const kernels = ['native/src/vec.h', 'native/src/gemm.h'].map((f) => [f, read(f)] as const);

/** The instruction-set macro each named level is compiled under. */
const MACRO: Record<string, string> = {
  avx512: '__AVX512F__',
  'avx-512': '__AVX512F__',
  avx2: '__AVX2__',
  'avx2+fma': '__AVX2__',
  neon: '__ARM_NEON',
  sve: '__ARM_FEATURE_SVE',
};

function assertKernelsFor(level: string, claimedBy: string): void {
  const macro = MACRO[level.toLowerCase()];
  assert.ok(macro, `${claimedBy} names '${level}', which this test does not know`);
  for (const [file, text] of kernels) {
    assert.ok(
      text.includes(`defined(${macro})`),
      `${claimedBy} claims '${level}' but ${file} has no ${macro} branch`,
    );
  }
}

test('every level simdLevel() can report has kernels of that instruction set', () => {
  const memory = read('native/src/memory.cc');
  const body = /Napi::Value SimdLevel\([^)]*\) \{([\s\S]*?)\n\}/.exec(memory)?.[1];
  assert.ok(body, 'SimdLevel not found in native/src/memory.cc');
  const levels = [...body.matchAll(/const char\* level = "([^"]+)"/g)].map((m) => m[1]!);
  assert.ok(levels.includes('scalar'), 'simdLevel has a scalar fallback');
  for (const level of levels) if (level !== 'scalar') assertKernelsFor(level, 'simdLevel()');
  assert.ok(levels.includes(native.simdLevel()), `this build reports '${native.simdLevel()}'`);
});

test("binding.gyp's fallback chain names only instruction sets that have kernels", () => {
  const chain = /fall back ([\w+-]+(?: -> [\w+-]+)+)/.exec(read('binding.gyp'))?.[1];
  assert.ok(chain, 'binding.gyp describes the fallback chain');
  const steps = chain.split(' -> ');
  assert.equal(steps[steps.length - 1], 'scalar');
  for (const step of steps.slice(0, -1)) assertKernelsFor(step, 'binding.gyp');
});
