#!/usr/bin/env bash
# Build an offline wheelhouse for localaug: run on a CONNECTED machine with the same OS, CPU
# architecture and Python version as the air-gapped target. It holds a wheel of localaug, of every
# dependency (llama-cpp-python is compiled here once) and of the chosen extras' model packages, plus
# SHA256SUMS. Carry the folder across the gap and install with --no-index (README, "Air-gapped install").
#
#   scripts/wheelhouse.sh DIR [EXTRAS]        EXTRAS: comma-separated, default "qwen" (the 1.5B teacher)
#   TORCH_SPEC='torch==2.13.0' scripts/wheelhouse.sh ...   which torch build to carry (default: CPU 2.13.0)
set -euo pipefail
out=${1:?usage: scripts/wheelhouse.sh DIR [EXTRAS]}
extras=${2-qwen}
torch_spec=${TORCH_SPEC:-torch==2.13.0}
repo=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-python3}

mkdir -p "$out"
# torch first and pinned, as in the README: unpinned, a dependency would pull a multi-GB CUDA build.
"$py" -m pip wheel --quiet --wheel-dir "$out" "$torch_spec" "setuptools>=77"
spec="$repo"
[ -n "$extras" ] && spec="$repo[$extras]"
"$py" -m pip wheel --quiet --wheel-dir "$out" --constraint <(echo "$torch_spec") "$spec"
# pip names its build of localaug like any wheel; keep one per version.
(cd "$out" && rm -f SHA256SUMS && sha256sum -- *.whl > SHA256SUMS)
n=$(wc -l < "$out/SHA256SUMS")
size=$(du -sh "$out" | cut -f1)
echo "wheelhouse: $n wheels, $size in $out"
echo "verify on the target: (cd $out && sha256sum -c SHA256SUMS)"
