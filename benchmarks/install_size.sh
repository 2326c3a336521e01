#!/usr/bin/env bash
# Install size of nextchar and each extra: site-packages of a fresh venv (MB) less an empty venv's.
#   bash benchmarks/install_size.sh [SOURCE (default: this checkout)] [WORK (default: /tmp/nextchar-sizes)]
# torch is installed first as the pinned CPU wheel (an unpinned torch pulls a multi-GB CUDA build).
set -euo pipefail
src=${1:-$(cd "$(dirname "$0")/.." && pwd)}
work=${2:-/tmp/nextchar-sizes}
torch=${TORCH:-torch==2.13.0}
mkdir -p "$work"
python3 -m venv "$work/bare"
bare=$(du -sm "$work/bare"/lib/python3*/site-packages | cut -f1)
echo "empty venv: ${bare} MB"
for extra in base serve train export study all; do
  v="$work/$extra"
  rm -rf "$v" && python3 -m venv "$v"
  case $extra in train|export|study|all) "$v/bin/pip" install -q "$torch" ;; esac
  spec="$src"; [ "$extra" != base ] && spec="$src[$extra]"
  "$v/bin/pip" install -q "$spec"
  echo "$extra: $(( $(du -sm "$v"/lib/python3*/site-packages | cut -f1) - bare )) MB"
done
