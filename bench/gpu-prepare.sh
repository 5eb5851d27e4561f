#!/usr/bin/env bash
# Prepares .gpu/ — what bench/gpu.sh needs on a bare, offline GPU machine — from this (x86-64,
# Debian) machine: a Node x64 build, the npm packages the tests and benches load (Dawn's linux-x64
# binary only), and the Vulkan loader .debs. .gpu/ is ignored (.git/info/exclude) and travels by
# naming it in the device call's `carry`; it must stay within the call's 64 MiB with the repo.
#
#   bash bench/gpu-prepare.sh          # after npm ci (node_modules holds the webgpu package)
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(uname -m)" = x86_64 ] || { echo "gpu-prepare: run on x86-64 (the GPU machine is x86-64)" >&2; exit 1; }
[ -f node_modules/webgpu/dist/linux-x64/dawn.node ] || { echo "gpu-prepare: node_modules/webgpu missing (npm ci first)" >&2; exit 1; }
exclude="$(git rev-parse --git-path info/exclude)"
grep -qx '/.gpu/' "$exclude" 2>/dev/null || echo '/.gpu/' >>"$exclude"
mkdir -p .gpu

# Node: the running binary, xz-compressed (the image has Python and CUDA but no Node).
if [ ! -f .gpu/node.xz ]; then
  xz -T0 -6 -c "$(command -v node)" >.gpu/node.xz.tmp && mv .gpu/node.xz.tmp .gpu/node.xz
fi

# npm packages: production dependencies plus tsx (runs the TypeScript), Dawn for linux-x64 only.
if [ ! -f .gpu/node_modules.tar.xz ]; then
  # The dependency closure of the production dependencies and tsx (resolved as Node would).
  mapfile -t deps < <(node --input-type=module -e "
    import fs from 'node:fs';
    import path from 'node:path';
    const root = JSON.parse(fs.readFileSync('package.json', 'utf8'));
    const seen = new Set();
    const walk = (name, from) => {
      for (let dir = from; ; dir = path.dirname(dir)) {
        const at = path.join(dir, 'node_modules', name);
        if (fs.existsSync(path.join(at, 'package.json'))) {
          const rel = path.relative(process.cwd(), at);
          if (seen.has(rel)) return;
          seen.add(rel);
          const pkg = JSON.parse(fs.readFileSync(path.join(at, 'package.json'), 'utf8'));
          for (const d of Object.keys({ ...pkg.dependencies, ...pkg.optionalDependencies })) walk(d, at);
          return;
        }
        if (dir === path.dirname(dir)) return;
      }
    };
    for (const d of [...Object.keys({ ...root.dependencies, ...root.optionalDependencies }), 'tsx']) walk(d, process.cwd());
    console.log([...seen].sort().join('\\n'));
  ")
  tar -cJf .gpu/node_modules.tar.xz.tmp \
    --exclude='node_modules/webgpu/dist/darwin-*' --exclude='node_modules/webgpu/dist/win32-*' \
    --exclude='node_modules/webgpu/dist/linux-arm64' "${deps[@]}"
  mv .gpu/node_modules.tar.xz.tmp .gpu/node_modules.tar.xz
fi

# The Vulkan loader (the NVIDIA driver's ICD is on the machine; the loader may not be).
if ! ls .gpu/libvulkan1_*.deb >/dev/null 2>&1; then
  lists=$(mktemp -d)
  mkdir -p "$lists/partial"
  o="-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=$lists"
  apt-get $o update >/dev/null
  (cd .gpu && apt-get $o download libvulkan1)
  rm -rf "$lists"
fi
du -sh .gpu/* .gpu
