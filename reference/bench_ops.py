#!/usr/bin/env python3
"""PyTorch counterpart of benches/kernels.rs: the same rows (names, directions, shapes) timed
with torch on CUDA (cuDNN convolutions with torch.backends.cudnn.benchmark, cuBLAS GEMMs,
CUDA events) or on the CPU (oneDNN, perf_counter), plus the ceilings: a device-to-device copy
and a large FP32 and TF32 matrix product. Writes JSON that the Rust harness joins
(kernels-<device>.md then carries a "PyTorch ms" column and the ratio).

    python3 reference/bench_ops.py --device cuda --out target/bench/torch_ops-cuda.json
    python3 reference/bench_ops.py --device cpu --threads 2 --size tiny --out ...

Same protocol as the Rust harness: warm-up runs, then the median of --reps timed runs, each
with its own pair of events, inputs rotated over enough buffer sets to exceed 128 MiB (CUDA)
so L2 does not flatter; random inputs, never zeros. Layer tables: gtadapt::bench (src/bench.rs);
keep them in step.
"""

import argparse
import json
import math
import os
import statistics
import time

import torch
import torch.nn.functional as F


def conv_layers(ndf, ngf, nz):
    d, g = ndf, ngf
    zin = 11 + 2 * d + nz
    # name, transposed, cin, cout, k, stride, pad, input size
    return [
        ("F1.conv1", False, 3, d, 5, 1, 0, 32),
        ("F1.conv2", False, d, d, 5, 1, 0, 14),
        ("F1.conv3", False, d, 2 * d, 5, 1, 0, 5),
        ("D.conv1", False, 3, d, 3, 1, 1, 32),
        ("D.conv2", False, d, 2 * d, 3, 1, 1, 16),
        ("D.conv3", False, 2 * d, 4 * d, 3, 1, 1, 8),
        ("D.conv4", False, 4 * d, 2 * d, 3, 1, 1, 4),
        ("G.convT1", True, zin, 8 * g, 2, 1, 0, 1),
        ("G.convT2", True, 8 * g, 4 * g, 4, 2, 1, 2),
        ("G.convT3", True, 4 * g, 2 * g, 4, 2, 1, 4),
        ("G.convT4", True, 2 * g, g, 4, 2, 1, 8),
        ("G.convT5", True, g, 3, 4, 2, 1, 16),
        ("G4.convT1", True, zin, 8 * g, 4, 1, 0, 1),
        ("G4.convT2", True, 8 * g, 4 * g, 4, 2, 1, 4),
        ("G4.convT3", True, 4 * g, 2 * g, 4, 2, 1, 8),
        ("G4.convT4", True, 2 * g, 3, 4, 2, 1, 16),
        ("D_src.conv1", False, 3, d, 4, 2, 1, 32),
        ("D_src.conv2", False, d, 2 * d, 4, 2, 1, 16),
        ("D_src.conv3", False, 2 * d, 4 * d, 4, 2, 1, 8),
        ("D_src.conv4", False, 4 * d, 11, 4, 1, 0, 4),
    ]


def bn_layers(ndf, ngf):
    d, g = ndf, ngf
    return [("D.bn1", d, 32), ("D.bn2", 2 * d, 16), ("D.bn3", 4 * d, 8), ("D.bn4", 2 * d, 4),
            ("G.bn1", 8 * g, 2), ("G.bn2", 4 * g, 4), ("G.bn3", 2 * g, 8), ("G.bn4", g, 16),
            ("G4.bn1", 8 * g, 4), ("G4.bn2", 4 * g, 8), ("G4.bn3", 2 * g, 16),
            ("D_src.bn2", 2 * d, 8), ("D_src.bn3", 4 * d, 4)]


def pool_layers(ndf):
    d = ndf
    return [("F1.pool1", d, 28, 2), ("F1.pool2", d, 10, 2), ("D.pool1", d, 32, 2),
            ("D.pool2", 2 * d, 16, 2), ("D.pool3", 4 * d, 8, 2), ("D.pool4", 2 * d, 4, 4)]


def linear_layers(ndf):
    e = 2 * ndf
    return [("C1.fc1", e, e), ("C1.fc2", e, 10), ("D.fc_class", e, 10), ("D.fc_src", e, 1)]


class Timer:
    def __init__(self, device, warmup, reps):
        self.device, self.warmup, self.reps = device, warmup, reps

    def times(self, run, sets, reps=None):
        reps = reps or self.reps
        for i in range(max(1, self.warmup)):
            run(i % sets)
        if self.device == "cuda":
            ev = [torch.cuda.Event(enable_timing=True) for _ in range(reps + 1)]
            torch.cuda.synchronize()
            ev[0].record()
            for i in range(reps):
                run(i % sets)
                ev[i + 1].record()
            torch.cuda.synchronize()
            return [ev[i].elapsed_time(ev[i + 1]) for i in range(reps)]
        out = []
        for i in range(reps):
            t = time.perf_counter()
            run(i % sets)
            out.append((time.perf_counter() - t) * 1e3)
        return out

    def median(self, run, sets, reps=None):
        return statistics.median(self.times(run, sets, reps))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--size", choices=["gta", "tiny"], default=None,
                    help="gta: batch 100, widths 64, nz 512 (default on cuda); tiny: batch 2, "
                         "widths 8 (default on cpu, as the Rust emulator run)")
    ap.add_argument("--batch", type=int)
    ap.add_argument("--width", type=int)
    ap.add_argument("--nz", type=int)
    ap.add_argument("--reps", type=int, default=int(os.environ.get("GTADAPT_BENCH_REPS", 50)))
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--rotate-mib", type=int, default=None)
    ap.add_argument("--gemm", type=int, default=None, help="m = n = k of the GEMM ceiling")
    ap.add_argument("--out", required=True, help="JSON output path")
    a = ap.parse_args()
    dev = a.device
    size = a.size or ("gta" if dev == "cuda" else "tiny")
    batch = a.batch or (100 if size == "gta" else 2)
    width = a.width or (64 if size == "gta" else 8)
    nz = a.nz or (512 if size == "gta" else 8)
    rotate = (a.rotate_mib if a.rotate_mib is not None else (128 if dev == "cuda" else 0)) << 20
    gemm_n = a.gemm or (4096 if dev == "cuda" else (512 if size == "gta" else 64))
    if a.threads:
        torch.set_num_threads(a.threads)
    if dev == "cuda":
        torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)
    timer = Timer(dev, a.warmup, max(1, a.reps))
    rows = []

    def sets_for(nbytes):
        return max(1, min(64, math.ceil(rotate / max(1, nbytes))))

    def rnd(*shape):
        return torch.rand(*shape, device=dev) * 2 - 1

    def record(name, direction, run, sets):
        try:
            ms = timer.median(run, sets)
            rows.append({"name": name, "direction": direction, "ms": ms, "sets": sets})
        except Exception as e:  # one failing op must not lose the rest
            rows.append({"name": name, "direction": direction, "ms": None, "note": str(e)})
        print(f"  {name:<12} {direction:<16} {rows[-1]['ms']}", flush=True)

    # Ceilings.
    ceil = {}
    nbytes = (512 << 20) if dev == "cuda" else (64 << 20)
    src = torch.empty(nbytes, dtype=torch.uint8, device=dev).random_(0, 255)
    dst = torch.empty_like(src)
    ceil["copy_gbs"] = 2 * nbytes / timer.median(lambda i: dst.copy_(src), 1, 20) / 1e6
    del src, dst
    A, B = rnd(gemm_n, gemm_n), rnd(gemm_n, gemm_n)
    flop = 2.0 * gemm_n ** 3
    if dev == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        ceil["gemm_fp32_gflops"] = flop / timer.median(lambda i: A @ B, 1, 10) / 1e6
        torch.backends.cuda.matmul.allow_tf32 = True
        ceil["gemm_tf32_gflops"] = flop / timer.median(lambda i: A @ B, 1, 10) / 1e6
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False  # FP32 convolutions, as ours
    else:
        ceil["gemm_fp32_gflops"] = flop / timer.median(lambda i: A @ B, 1, 10) / 1e6
        ceil["gemm_tf32_gflops"] = None
    ceil["gemm_size"] = gemm_n
    del A, B
    print("ceilings:", ceil, flush=True)

    with torch.no_grad():
        for name, tr, cin, cout, k, s, p, sz in conv_layers(width, width, nz):
            xs_shape = (batch, cin, sz, sz)
            w_shape = (cin, cout, k, k) if tr else (cout, cin, k, k)
            x0, w0 = rnd(*xs_shape), rnd(*w_shape)
            y0 = (F.conv_transpose2d if tr else F.conv2d)(x0, w0, stride=s, padding=p)
            nb = 4 * (2 * x0.numel() + w0.numel() + 2 * y0.numel())
            sets = sets_for(nb)
            xs = [x0] + [rnd(*xs_shape) for _ in range(sets - 1)]
            ws = [w0] + [rnd(*w_shape) for _ in range(sets - 1)]
            gys = [rnd(*y0.shape) for _ in range(sets)]

            def fwd(i, tr=tr, s=s, p=p, xs=xs, ws=ws):
                f = F.conv_transpose2d if tr else F.conv2d
                return f(xs[i], ws[i], stride=s, padding=p)

            def bwd(i, mask, tr=tr, s=s, p=p, xs=xs, ws=ws, gys=gys):
                return torch.ops.aten.convolution_backward(
                    gys[i], xs[i], ws[i], None, [s, s], [p, p], [1, 1], tr, [0, 0], 1, mask)

            record(name, "forward", fwd, sets)
            record(name, "backward-data", lambda i, b=bwd: b(i, [True, False, False]), sets)
            record(name, "backward-filter", lambda i, b=bwd: b(i, [False, True, False]), sets)
            del xs, ws, gys

        for name, c, hw in bn_layers(width, width):
            shape = (batch, c, hw, hw)
            n = batch * c * hw * hw
            sets = sets_for(16 * n)
            xs = [rnd(*shape).requires_grad_(True) for _ in range(sets)]
            gys = [rnd(*shape) for _ in range(sets)]
            wgt = torch.rand(c, device=dev).requires_grad_(True)
            bias = rnd(c).requires_grad_(True)
            rm, rv = torch.zeros(c, device=dev), torch.ones(c, device=dev)

            def bn_f(i, xs=xs, wgt=wgt, bias=bias, rm=rm, rv=rv):
                return F.relu(F.batch_norm(xs[i], rm, rv, wgt, bias, True, 0.1, 1e-5))

            record(name, "forward", bn_f, sets)
            with torch.enable_grad():
                ys = [F.batch_norm(x, rm, rv, wgt, bias, True, 0.1, 1e-5) for x in xs]

                def bn_b(i, ys=ys, xs=xs, gys=gys, wgt=wgt, bias=bias):
                    return torch.autograd.grad(ys[i], (xs[i], wgt, bias), gys[i],
                                               retain_graph=True)

                record(name, "backward", bn_b, sets)
            del xs, gys, ys

        for name, c, hw, k in pool_layers(width):
            shape = (batch, c, hw, hw)
            n = batch * c * hw * hw
            sets = sets_for(4 * (2 * n + 3 * n // (k * k)))
            xs = [rnd(*shape) for _ in range(sets)]
            outs = [F.max_pool2d(x, k, return_indices=True) for x in xs]
            gys = [rnd(*o[0].shape) for o in outs]
            record(name, "forward",
                   lambda i, xs=xs, k=k: F.max_pool2d(xs[i], k, return_indices=True), sets)
            record(name, "backward", lambda i, xs=xs, k=k, outs=outs, gys=gys:
                   torch.ops.aten.max_pool2d_with_indices_backward(
                       gys[i], xs[i], [k, k], [k, k], [0, 0], [1, 1], False, outs[i][1]), sets)
            del xs, outs, gys

        for name, fin, fout in linear_layers(width):
            sets = sets_for(8 * (batch * fin + fin * fout + batch * fout))
            xs = [rnd(batch, fin) for _ in range(sets)]
            ws = [rnd(fout, fin) for _ in range(sets)]
            gys = [rnd(batch, fout) for _ in range(sets)]
            b = rnd(fout)
            record(name, "forward", lambda i, xs=xs, ws=ws, b=b: F.linear(xs[i], ws[i], b), sets)
            record(name, "backward-data", lambda i, gys=gys, ws=ws: gys[i] @ ws[i], sets)
            record(name, "backward-weight", lambda i, gys=gys, xs=xs: gys[i].t() @ xs[i], sets)

        for k in (10, 11):
            name = f"CE[{batch},{k}]"
            logits = rnd(batch, k).requires_grad_(True)
            labels = torch.arange(batch, device=dev) % k
            record(name, "forward", lambda i, lg=logits, lb=labels: F.cross_entropy(lg, lb), 1)
            with torch.enable_grad():
                loss = F.cross_entropy(logits, labels)
                record(name, "backward", lambda i, loss=loss, lg=logits:
                       torch.autograd.grad(loss, lg, retain_graph=True), 1)
        name = f"BCE[{batch}]"
        x = rnd(batch).requires_grad_(True)
        one = torch.ones(batch, device=dev)
        record(name, "forward", lambda i: F.binary_cross_entropy_with_logits(x, one), 1)
        with torch.enable_grad():
            loss = F.binary_cross_entropy_with_logits(x, one)
            record(name, "backward",
                   lambda i: torch.autograd.grad(loss, x, retain_graph=True), 1)

    # Adam over one flat buffer of exp1's parameter count (gtadapt::bench::adam_params).
    def adam_params():
        n = 0
        for name, tr, cin, cout, k, s, p, sz in conv_layers(width, width, nz):
            if name.split(".")[0] in ("F1", "D", "G"):
                n += cin * cout * k * k + (cout if name.split(".")[0] in ("F1", "D") else 0)
        n += sum(2 * c for nm, c, _ in bn_layers(width, width) if nm.split(".")[0] in ("D", "G"))
        n += sum(a * b + b for _, a, b in linear_layers(width))
        return n

    n = adam_params()
    sets = sets_for(16 * n)
    params = [torch.nn.Parameter(rnd(n)) for _ in range(sets)]
    for prm in params:
        prm.grad = rnd(n)
    kw = {"fused": True} if dev == "cuda" else {"foreach": False}
    opts = [torch.optim.Adam([prm], lr=2e-4, betas=(0.8, 0.999), **kw) for prm in params]
    for o in opts:
        o.step()
    record("Adam(exp1)", "step", lambda i: opts[i].step(), sets)

    meta = {
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(0) if dev == "cuda" else "cpu",
        "cudnn": torch.backends.cudnn.version() if dev == "cuda" else None,
        "cuda": torch.version.cuda if dev == "cuda" else None,
        "threads": torch.get_num_threads(),
        "batch": batch, "width": width, "nz": nz, "reps": timer.reps, "warmup": timer.warmup,
        "rotate_bytes": rotate, "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "clock": "CUDA events" if dev == "cuda" else "perf_counter",
    }
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump({"meta": meta, "ceilings": ceil, "rows": rows}, f, indent=1)
    print(f"wrote {len(rows)} rows to {a.out}")


if __name__ == "__main__":
    main()
