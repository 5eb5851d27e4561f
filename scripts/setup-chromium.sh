#!/usr/bin/env bash
# Installs Debian's chromium for the browser test (`npm run test:browser`), which drives it headless
# with playwright-core (which never downloads a browser) and SwiftShader's WebGPU. Idempotent: it does
# nothing when $QLORA_CHROMIUM (default /usr/bin/chromium) is already there. See docs/web.md.
set -euo pipefail
CHROMIUM=${QLORA_CHROMIUM:-/usr/bin/chromium}
if [ -x "$CHROMIUM" ]; then
  echo "setup-chromium: $CHROMIUM is already installed"
  exit 0
fi
if ! command -v apt-get >/dev/null; then
  echo "setup-chromium: $CHROMIUM is missing and there is no apt-get; install chromium by hand or set QLORA_CHROMIUM" >&2
  exit 1
fi
if [ "$(id -u)" != 0 ]; then
  echo "setup-chromium: needs root for apt-get (or run it with sudo)" >&2
  exit 1
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
if [ -x "$CHROMIUM" ]; then
  echo "setup-chromium: installed $("$CHROMIUM" --version 2>/dev/null || echo chromium)"
else
  echo "setup-chromium: apt-get installed chromium but $CHROMIUM is still missing" >&2
  exit 1
fi
