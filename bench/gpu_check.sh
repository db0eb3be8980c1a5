#!/usr/bin/env bash
# Packs what bench/gpu_check.py needs on the GPU machine (which reaches no package registry) into .whl/ at the
# repo root (git-ignored), checks that the working tree plus the wheels stay under the 64 MiB that travel, and
# prints the one device command. Run it here, where pip reaches PyPI. See bench/README.md, "GPU check".
set -euo pipefail
cd "$(dirname "$0")/.."

# The GPU machine has torch 2.11 + CUDA 13, transformers 5.17, peft, accelerate, huggingface_hub 1.33,
# tokenizers 0.23.2, safetensors 0.8.0 and regex, but no bitsandbytes; localaug needs transformers >= 5.24.
# transformers 5.24's needs (huggingface-hub>=1.31, tokenizers<0.24,>=0.23.1, safetensors>=0.8.0,
# regex>=2025.10.22, as 5.17's) are already met there, so these three wheels are all that travel.
WHEELS=(bitsandbytes==0.50.2 transformers==5.24.0 peft==0.21.2)
LIMIT=$((64 * 1024 * 1024))

git check-ignore -q .whl || echo "/.whl/" >> "$(git rev-parse --git-path info/exclude)"
mkdir -p .whl
for w in "${WHEELS[@]}"; do  # one version of each: two of the same package stop the install there
  rm -f ".whl/${w%%==*}-"*.whl
done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d .whl "${WHEELS[@]}"

mib() { awk -v b="$1" 'BEGIN {printf "%.1f MiB", b / 1048576}'; }
wheels=$(du -cb .whl/*.whl | tail -1 | cut -f1)
# What travels: tracked and untracked-not-ignored files, shared/ if the checkout has one, and the carried .whl/.
tree=$(git ls-files -z --cached --others --exclude-standard | xargs -0 du -cb | awk '$2 == "total" {s += $1} END {print s + 0}')
if [ -d shared ]; then tree=$((tree + $(du -sb shared | cut -f1))); fi
total=$((wheels + tree))
ls -l .whl/*.whl
echo "wheels $(mib "$wheels") + working tree $(mib "$tree") = $(mib "$total") (limit 64 MiB)"
if [ "$total" -ge "$LIMIT" ]; then
  echo "gpu_check.sh: over the 64 MiB that travel to the GPU machine; ignore or remove something" >&2
  exit 1
fi
cat <<'EOF'
Device command (carry [".whl"], timeout_s 480):
set -o pipefail; python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 && python3 bench/gpu_check.py --shape llama2-7b --json $OUT/gpu_check.json 2>&1 | tee $OUT/gpu_check.log
EOF
