#!/bin/bash
# Results v3 confirmation (bench/protocol-v3.md, committed at 00f56f3): one lane per task, run from this
# worktree (detached at the protocol commit). Rerunning it resumes: study.py skips every run with a line in
# runs/v3-confirm.jsonl and an unfinished run resumes at its first unfinished stage.
# The protocol commit's study.py reuses one teacher for every run of a process, but the loop closes it at the
# end of each run: the next run's first teacher call crashes in libllama (segfault, seen at 02:08 and 07:27 UTC
# on 2026-12-07). So the lane starts a fresh process after a crash, which resumes the run; the code that runs
# is unchanged (fixed on main after the protocol commit).
# usage: bench/confirm-v3-lane.sh trec|snips   (in a worktree of the protocol commit, 00f56f3)
# This is the script that ran the v3 lanes (then as runs/confirm-v3.sh, outside the repository), with one
# change: it read the benchmark data from a path of that machine, and now from LOCALAUG_DATA_DIR.
cd "$(dirname "$0")/.."
# Started with setsid, the lane is its own scheduling autogroup, where `nice` counts only inside the group:
# the group's own nice makes the lane yield the cores to anything else (CI, timings) and use them when idle.
echo 19 > /proc/self/autogroup 2>/dev/null || true
task=$1
: "${LOCALAUG_DATA_DIR:?set LOCALAUG_DATA_DIR to the benchmark data}"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false
for attempt in 1 2 3 4 5 6 7 8; do
  echo "$(date -u +%FT%TZ) start lane $task at $(git rev-parse --short=12 HEAD) (process $attempt)" >> runs/confirm-$task.log
  nice -n 19 .venv/bin/python bench/study.py --task $task --phase confirm --study v3 \
    --data-seeds 20 21 22 23 24 25 --test-size 200 --arms localaug steps --plain-from-localaug \
    --teacher-threads 1 --set iterations=4 --out runs/study --results runs/v3-confirm.jsonl \
    --cache bench/results/teacher-cache.sqlite >> runs/confirm-$task.log 2>&1
  rc=$?
  echo "$(date -u +%FT%TZ) lane $task process exited with status $rc" >> runs/confirm-$task.log
  [ "$rc" -eq 0 ] && break
done
