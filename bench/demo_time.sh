#!/usr/bin/env bash
# The README's main job, timed as a person runs it: from a pseudo-terminal (TERM=xterm, 100 columns), each
# run with an empty teacher cache. About 10 minutes on 2 cores; run it on a quiet machine.
#   A: an empty cache folder, `localaug prepare`, then `localaug run`
#   B: the same cache folder with the teacher cache emptied, `localaug run` again
#   C: another empty cache folder, `localaug run` alone (it prepares the models itself)
# Usage: bash bench/demo_time.sh [OUT_DIR]   (run directories and terminal transcripts go to OUT_DIR)
set -u
cd "$(dirname "$0")/.."
out=${1:-$(mktemp -d)}
mkdir -p "$out"
export TERM=xterm COLUMNS=100
timed() {  # label, command
  local start end rc
  start=$(date +%s.%N)
  script -qec "stty cols 100 rows 40; $2" "$out/$(echo "$1" | tr -c 'a-zA-Z0-9' _).typescript" > /dev/null
  rc=$?
  end=$(date +%s.%N)
  printf '%-48s rc=%s %s s\n' "$1" "$rc" "$(python3 -c "print(round($end - $start, 1))")"
}
export LOCALAUG_CACHE_DIR=$(mktemp -d)
timed "A prepare (empty cache folder)" ".venv/bin/localaug prepare"
timed "A run after prepare" ".venv/bin/localaug run --out $out/a"
rm -f "$LOCALAUG_CACHE_DIR"/teacher.sqlite*
timed "B run after prepare, teacher cache emptied" ".venv/bin/localaug run --out $out/b"
export LOCALAUG_CACHE_DIR=$(mktemp -d)
timed "C run alone (empty cache folder)" ".venv/bin/localaug run --out $out/c"
echo "run directories and transcripts: $out"
