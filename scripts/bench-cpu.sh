#!/usr/bin/env bash
# CPU benchmarks of gtadapt beside the PyTorch reference, in one run on one machine with the
# same thread count, interleaved (ours, torch, ours, torch) so background load hits both alike.
# Needs: a release build (cargo bench --no-run), python3 with torch (pip install torch).
#
#   scripts/bench-cpu.sh [all|conv|step] [THREADS] [OUT_DIR]
#
# conv: every conv / conv-transpose layer of the GTA networks (benches/conv_cpu.rs vs
# reference/bench_conv_cpu.py); step: ms per full training iteration, exp1 and exp3, batch 100,
# default widths (benches/train_step.rs vs reference/gta_torch.py bench).
# Writes OUT_DIR/{conv_ours,conv_torch,step_ours,step_torch}-N.* and prints the last round.
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-all}
threads=${2:-2}
out=${3:-target/bench-cpu}
mkdir -p "$out"
rm -f "$out"/conv_ours-*.jsonl "$out"/conv_torch-*.jsonl
export RAYON_NUM_THREADS=$threads
cargo bench --no-run --bench conv_cpu --bench train_step >/dev/null 2>&1
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "commit: $(git rev-parse --short HEAD), threads: $threads"
for i in 1 2; do
  if [ "$what" = all ] || [ "$what" = conv ]; then
    GTADAPT_BENCH_JSON="$out/conv_ours-$i.jsonl" cargo bench --bench conv_cpu 2>/dev/null > "$out/conv_ours-$i.md"
    python3 reference/bench_conv_cpu.py --threads "$threads" --json "$out/conv_torch-$i.jsonl" > "$out/conv_torch-$i.md"
  fi
  if [ "$what" = all ] || [ "$what" = step ]; then
    GTADAPT_BENCH_ITERS=5 GTADAPT_BENCH_EXPERIMENTS=exp1,exp3 cargo bench --bench train_step 2>/dev/null > "$out/step_ours-$i.md"
    for e in exp1 exp3; do
      python3 reference/gta_torch.py bench --threads "$threads" --batch 100 --experiment "$e" --iters 5 --warmup 1 > "$out/step_torch-$e-$i.json"
    done
  fi
done
cat "$out"/*-2.md "$out"/*-2.json 2>/dev/null
if [ "$what" = all ] || [ "$what" = conv ]; then
  echo
  echo "joined (median of the two rounds), also in $out/conv_joined.md:"
  python3 reference/bench_join.py "$out/conv_ours-1.jsonl,$out/conv_ours-2.jsonl" \
    "$out/conv_torch-1.jsonl,$out/conv_torch-2.jsonl" | tee "$out/conv_joined.md"
fi
