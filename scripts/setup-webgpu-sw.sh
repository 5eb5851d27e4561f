#!/usr/bin/env bash
# Installs a software Vulkan adapter (Mesa lavapipe from bookworm-backports) so the `webgpu` npm
# package (Dawn) finds a WebGPU adapter on machines without a GPU (CI). Idempotent: it does nothing
# when Dawn already finds an adapter. Debian 12's own Mesa 22.3 lavapipe is rejected by Dawn
# (missing shaderUniform*ArrayDynamicIndexing), Mesa 25 from bookworm-backports is accepted.
# See docs/webgpu.md.
set -euo pipefail
cd "$(dirname "$0")/.."

has_adapter() {
  node -e "
    import('webgpu').then(async ({ create, globals }) => {
      Object.assign(globalThis, globals);
      const gpu = create([]);
      const a = await gpu.requestAdapter();
      process.exit(a ? 0 : 1);
    }).catch(() => process.exit(2));
  " >/dev/null 2>&1
}

if has_adapter; then
  echo "setup-webgpu-sw: a WebGPU adapter is already available"
  exit 0
fi
if ! command -v apt-get >/dev/null; then
  echo "setup-webgpu-sw: no WebGPU adapter and no apt-get; install a Vulkan driver by hand" >&2
  exit 1
fi
if [ "$(id -u)" != 0 ]; then
  echo "setup-webgpu-sw: needs root for apt-get (or run it with sudo)" >&2
  exit 1
fi
. /etc/os-release
if [ "${VERSION_CODENAME:-}" = bookworm ]; then
  if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
    echo "setup-webgpu-sw: adding bookworm-backports to apt's sources"
    cat > /etc/apt/sources.list.d/qlora-bookworm-backports.sources <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -t bookworm-backports mesa-vulkan-drivers libvulkan1 >/dev/null
else
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mesa-vulkan-drivers libvulkan1 >/dev/null
fi
if has_adapter; then
  echo "setup-webgpu-sw: software Vulkan adapter installed"
else
  echo "setup-webgpu-sw: installed Mesa's Vulkan drivers but Dawn still finds no adapter" >&2
  exit 1
fi
