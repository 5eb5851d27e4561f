/**
 * Writes fixtures/datasets/hub-parquet/: a tiny dataset in the layout `datasets`' push_to_hub gives a
 * Hub repository (README.md whose YAML names each split's parquet files, data/<split>-0000i-of-0000N.parquet),
 * made from the first rows of fixtures/datasets/llamafactory_identity/identity.json (Alpaca rows).
 * The Hub tests serve it from a local mock server. Run: node --import tsx scripts/make-hub-parquet.ts
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parquetWriteFile } from 'hyparquet-writer';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const source = path.join(root, 'fixtures/datasets/llamafactory_identity/identity.json');
const out = path.join(root, 'fixtures/datasets/hub-parquet');
const rows = JSON.parse(fs.readFileSync(source, 'utf8')) as {
  instruction: string;
  input: string;
  output: string;
}[];

function write(file: string, part: typeof rows): void {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  parquetWriteFile({
    filename: file,
    columnData: (['instruction', 'input', 'output'] as const).map((name) => ({
      name,
      data: part.map((r) => r[name]),
      type: 'STRING' as const,
    })),
  });
}

write(path.join(out, 'data/train-00000-of-00002.parquet'), rows.slice(0, 12));
write(path.join(out, 'data/train-00001-of-00002.parquet'), rows.slice(12, 24));
write(path.join(out, 'data/test-00000-of-00001.parquet'), rows.slice(24, 32));
fs.writeFileSync(
  path.join(out, 'README.md'),
  `---
configs:
- config_name: default
  data_files:
  - split: train
    path: data/train-*
  - split: test
    path: data/test-*
---
# hub-parquet

Rows 0-31 of LLaMA-Factory's identity.json (Alpaca format) as parquet, in the layout
\`datasets\`' push_to_hub writes. Made by scripts/make-hub-parquet.ts.
`,
);
