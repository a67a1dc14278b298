#!/usr/bin/env python3
"""PyTorch CPU timings of every conv / conv-transpose layer of the GTA networks, in f32:
forward, backward-data and backward-filter, no bias. The counterpart of benches/conv_cpu.rs:
same rows, same markdown table, same JSON fields (plus "torch", the torch version).

    python3 reference/bench_conv_cpu.py --threads 2 [--batch 100] [--reps 10] [--json out.jsonl]

Backward-data and backward-filter call aten's convolution_backward (what autograd runs for
conv2d / conv_transpose2d) with an output mask that asks for one gradient only, so neither
includes a forward pass. FLOPs: 2 per multiply-add of the direct convolution,
2·N·Cout·Ho·Wo·Cin·kh·kw for a conv; for a conv-transpose the same product on its input side,
2·N·Cin·H·W·Cout·kh·kw.
"""

import argparse
import json
import os
import statistics
import time

import torch
import torch.nn.functional as F

# name, transposed, cin, cout, kernel, stride, padding, input size (H = W)
LAYERS = [
    ("F1.conv1", False, 3, 64, 5, 1, 0, 32),
    ("F1.conv2", False, 64, 64, 5, 1, 0, 14),
    ("F1.conv3", False, 64, 128, 5, 1, 0, 5),
    ("D.conv1", False, 3, 64, 3, 1, 1, 32),
    ("D.conv2", False, 64, 128, 3, 1, 1, 16),
    ("D.conv3", False, 128, 256, 3, 1, 1, 8),
    ("D.conv4", False, 256, 128, 3, 1, 1, 4),
    ("G.convT1", True, 651, 512, 2, 1, 0, 1),
    ("G.convT2", True, 512, 256, 4, 2, 1, 2),
    ("G.convT3", True, 256, 128, 4, 2, 1, 4),
    ("G.convT4", True, 128, 64, 4, 2, 1, 8),
    ("G.convT5", True, 64, 3, 4, 2, 1, 16),
]
DIRECTIONS = ["forward", "backward-data", "backward-filter"]


def median_ms(reps, f):
    f()  # warm-up
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        f()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=int(os.environ.get("GTADAPT_BENCH_BATCH", 100)))
    ap.add_argument("--reps", type=int, default=int(os.environ.get("GTADAPT_BENCH_REPS", 10)))
    ap.add_argument("--json", default=os.environ.get("GTADAPT_BENCH_JSON"),
                    help="append one JSON line per row to this file")
    ap.add_argument("--layers", default=os.environ.get("GTADAPT_BENCH_LAYERS", ""),
                    help="comma-separated layer-name prefixes (default: all)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    n, reps = args.batch, max(1, args.reps)
    prefixes = [p for p in args.layers.split(",") if p]
    print(f"torch {torch.__version__} conv CPU bench: f32, batch {n}, {reps} reps (median), "
          f"threads {torch.get_num_threads()}")
    print()
    print("| layer | shape | direction | ms | GFLOP | GFLOP/s |")
    print("|---|---|---|---:|---:|---:|")
    lines = []
    with torch.no_grad():
        for name, transposed, cin, cout, k, s, p, size in LAYERS:
            if prefixes and not any(name.startswith(f) for f in prefixes):
                continue
            x = torch.rand(n, cin, size, size) * 2 - 1
            if transposed:
                w = torch.rand(cin, cout, k, k) * 2 - 1
                y = F.conv_transpose2d(x, w, stride=s, padding=p)
                pix = size * size
            else:
                w = torch.rand(cout, cin, k, k) * 2 - 1
                y = F.conv2d(x, w, stride=s, padding=p)
                pix = y.shape[2] * y.shape[3]
            gy = torch.rand_like(y) * 2 - 1
            flop = 2.0 * n * cout * pix * cin * k * k
            kind = "convT" if transposed else "conv"
            shape = f"{kind} k{k} s{s} p{p} {cin}->{cout} {size}x{size}"

            def forward():
                if transposed:
                    return F.conv_transpose2d(x, w, stride=s, padding=p)
                return F.conv2d(x, w, stride=s, padding=p)

            def backward(mask):
                return torch.ops.aten.convolution_backward(
                    gy, x, w, None, [s, s], [p, p], [1, 1], transposed, [0, 0], 1, mask)

            runs = {
                "forward": forward,
                "backward-data": lambda: backward([True, False, False]),
                "backward-filter": lambda: backward([False, True, False]),
            }
            for direction in DIRECTIONS:
                ms = median_ms(reps, runs[direction])
                gflops = flop / ms / 1e6
                print(f"| {name} | {shape} | {direction} | {ms:.3f} | {flop / 1e9:.3f} "
                      f"| {gflops:.1f} |")
                lines.append(json.dumps({
                    "impl": "torch", "torch": torch.__version__, "layer": name, "shape": shape,
                    "direction": direction, "batch": n, "threads": torch.get_num_threads(),
                    "reps": reps, "ms": round(ms, 4), "gflop": round(flop / 1e9, 4),
                    "gflops": round(gflops, 2)}))
    if args.json:
        with open(args.json, "a") as f:
            f.write("\n".join(lines) + "\n")
        print(f"\nJSON lines appended to {args.json}")


if __name__ == "__main__":
    main()
