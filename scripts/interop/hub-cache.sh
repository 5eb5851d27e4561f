#!/usr/bin/env bash
# The Hub cache shared with Python, checked against the real huggingface_hub (not run by CI: it needs
# Python packages). Usage: scripts/interop/hub-cache.sh PYTHON  (a python with huggingface_hub and
# transformers installed). Both directions, against the test suite's mock Hub on 127.0.0.1:
#   1. huggingface_hub.snapshot_download fills a cache; qlora generate reads it with HF_HUB_OFFLINE=1;
#   2. qlora downloads into a fresh cache; huggingface_hub (local_files_only, scan_cache_dir) and
#      transformers.AutoConfig read it offline.
set -euo pipefail
PY=${1:?usage: hub-cache.sh PYTHON}
cd "$(dirname "$0")/../.."
WORK=$(mktemp -d)
trap 'kill $SERVER 2>/dev/null || true; rm -rf "$WORK"' EXIT
node --import tsx scripts/interop/hub-mock-serve.ts "$WORK/url" & SERVER=$!
for _ in $(seq 100); do [ -s "$WORK/url" ] && break; sleep 0.2; done
URL=$(cat "$WORK/url")
qlora() { node --import tsx src/cli/run.ts "$@"; }

echo "1. huggingface_hub downloads, qlora-ts reads offline"
HF_ENDPOINT=$URL HF_HUB_DISABLE_XET=1 "$PY" -c "
from huggingface_hub import snapshot_download
print(snapshot_download('test/stories', cache_dir='$WORK/py', allow_patterns=['*.json', '*.safetensors']))"
A=$(HF_HUB_CACHE=$WORK/py HF_HUB_OFFLINE=1 qlora generate -m test/stories -p 'Once upon a time' -t 0 -n 20 2>/dev/null)

echo "2. qlora-ts downloads, huggingface_hub and transformers read offline"
B=$(HF_HUB_CACHE=$WORK/ts HF_ENDPOINT=$URL qlora generate -m test/stories -p 'Once upon a time' -t 0 -n 20 2>/dev/null)
HF_HUB_OFFLINE=1 "$PY" -c "
from huggingface_hub import snapshot_download, scan_cache_dir
from transformers import AutoConfig
print(snapshot_download('test/stories', cache_dir='$WORK/ts', local_files_only=True))
info = scan_cache_dir('$WORK/ts')
assert not info.warnings, info.warnings
for r in info.repos:
    for rev in r.revisions:
        print(r.repo_id, rev.commit_hash, sorted(f.file_name for f in rev.files))
print('AutoConfig:', AutoConfig.from_pretrained('test/stories', cache_dir='$WORK/ts', local_files_only=True).model_type)"

[ "$A" = "$B" ] || { echo "the two caches gave different text" >&2; exit 1; }
echo "ok: both caches give: $A"
