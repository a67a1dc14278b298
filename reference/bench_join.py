#!/usr/bin/env python3
"""Joins the JSON lines of benches/conv_cpu.rs (impl "gtadapt") and
reference/bench_conv_cpu.py (impl "torch") into one markdown table: per (layer, direction)
the median over rounds of each side's ms, GFLOP/s, and the throughput ratio ours / PyTorch
(> 1: ours faster), with the geometric mean. scripts/bench-cpu.sh calls it.

    python3 reference/bench_join.py OURS.jsonl[,OURS2.jsonl] TORCH.jsonl[,TORCH2.jsonl]
"""
import json
import math
import statistics
import sys


def load(paths):
    rows = {}
    for p in paths.split(","):
        for line in open(p):
            if line.strip():
                r = json.loads(line)
                rows.setdefault((r["layer"], r["direction"]), []).append(r)
    return rows


def main():
    ours, torch = load(sys.argv[1]), load(sys.argv[2])
    print("| layer | direction | GFLOP | ours ms | ours GFLOP/s | PyTorch ms | PyTorch GFLOP/s "
          "| ours / PyTorch |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    ratios = []
    for key, rs in ours.items():
        if key not in torch:
            continue
        gflop = rs[0]["gflop"]
        o = statistics.median(r["ms"] for r in rs)
        t = statistics.median(r["ms"] for r in torch[key])
        ratios.append(t / o)
        print(f"| {key[0]} | {key[1]} | {gflop:.3f} | {o:.2f} | {gflop / o * 1e3:.1f} | {t:.2f} "
              f"| {gflop / t * 1e3:.1f} | {t / o:.2f} |")
    if ratios:
        g = math.exp(sum(map(math.log, ratios)) / len(ratios))
        print(f"\n**Geometric mean, ours / PyTorch throughput: {g:.2f}** (range "
              f"{min(ratios):.2f}–{max(ratios):.2f}, {len(ratios)} rows).")


if __name__ == "__main__":
    main()
