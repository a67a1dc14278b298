#!/usr/bin/env bash
# One-shot GPU validation over binaries built elsewhere (scripts/gpu-bundle.sh): for a GPU
# machine with no Rust and no network. Needs only bash and coreutils.
#
#   scripts/gpu-check.sh [BUNDLE] [REPORT_DIR]
#     BUNDLE      default: gpu-bundle/ next to this script's repo
#     REPORT_DIR  default: $OUT if set, else ./gpu-report
#
# Runs `gtadapt info` and `gtadapt kernels check --device cuda`; a short exp1 training run on
# the GPU (CUDA graph, --no-graph, TF32; same metrics required of graph and no-graph) and the
# same on the CPU (GPU_CHECK_TRAIN_ITERS iterations, default 60); the GPU-capable test
# executables with GTADAPT_REQUIRE_GPU=1 (a missing GPU fails them instead of skipping):
# every tests/gpu_* target, and the library's unit tests filtered to `gpu::`; then the GPU
# benchmarks (GPU_CHECK_BENCHES=0 skips them; each under GPU_CHECK_BENCH_TIMEOUT seconds,
# default 240), a few minutes in all:
#   1. reference/bench_ops.py --device cuda (PyTorch: cuDNN convs, cuBLAS GEMMs, the copy and
#      FP32/TF32 GEMM ceilings) -> REPORT_DIR/bench/torch_ops-cuda.json, when python3 has torch;
#   2. reference/gta_torch.py bench --device cuda, exp1 and exp3, batch 100 and 64, eager, and
#      for exp1 at batch 100 also with --compile (torch.compile, which compiles for minutes;
#      GPU_CHECK_TORCH_COMPILE=all for every case, 0 for none; falls back to eager, saying so,
#      when it cannot compile)
#      -> REPORT_DIR/bench/torch_iteration-<exp>-b<batch>-<eager|compiled>.json;
#   3. benches/kernels on CUDA (joins 1.; cuDNN and cuBLAS columns through cudarc, with the
#      nvidia/*/lib folders of PyTorch's pip wheels put on LD_LIBRARY_PATH so cudarc finds
#      libcudnn / libcublas; "n/a" where they are absent) -> REPORT_DIR/bench/kernels-cuda.{md,json};
#   4. benches/train_step on CUDA, exp1 and exp3, batch 100 and 64 -> bench/train_step-cuda.*;
# the CPU-only benches run only with GPU_CHECK_CPU_BENCHES=1. The tables go into the report.
# Writes REPORT_DIR/gpu-check.md (and each command's full log next to it). Exit status: 0 when
# every test passed (a failing benchmark is listed but does not fail the check).
set -uo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
bundle="$(cd "${1:-$here/gpu-bundle}" && pwd)" || {
    echo "gpu-check: no bundle at ${1:-$here/gpu-bundle} (build one with scripts/gpu-bundle.sh)" >&2
    exit 2
}
report_dir="${2:-${OUT:-$PWD/gpu-report}}"
mkdir -p "$report_dir/logs"
report="$report_dir/gpu-check.md"
bench_timeout="${GPU_CHECK_BENCH_TIMEOUT:-240}"
bench_out="$report_dir/bench"
mkdir -p "$bench_out"

export GTADAPT_REQUIRE_GPU=1
if [[ -d "$bundle/ptx" && -z "${GTADAPT_PTX_DIR:-}" ]]; then
    export GTADAPT_PTX_DIR="$bundle/ptx"
fi
# The PTX cache goes with the report's machine, not the user's home.
export GTADAPT_PTX_CACHE="${GTADAPT_PTX_CACHE:-$report_dir/ptx-cache}"

failed=0
summary=()

# run NAME TIMEOUT CMD...: runs CMD, logs it, appends a section to the report.
run() {
    local name="$1" limit="$2"
    shift 2
    local log="$report_dir/logs/$name.log" start end rc
    start=$(date +%s.%N)
    if [[ "$limit" != 0 ]] && command -v timeout >/dev/null; then
        timeout "$limit" "$@" >"$log" 2>&1
    else
        "$@" >"$log" 2>&1
    fi
    rc=$?
    end=$(date +%s.%N)
    local secs
    secs=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')
    local status=PASS
    [[ $rc -ne 0 ]] && status="FAIL (exit $rc)"
    [[ $rc -eq 124 ]] && status="TIMEOUT (${limit}s)"
    summary+=("| $name | $status | $secs s |")
    {
        echo "### $name: $status, $secs s"
        echo
        echo '```'
        echo "\$ $*"
        tail -n 60 "$log"
        echo '```'
        echo
    } >>"$report.sections"
    return $rc
}

rm -f "$report.sections"
run info 60 "$bundle/gtadapt" info || failed=1
run kernels-check 300 "$bundle/gtadapt" kernels check --device cuda || failed=1
for t in "$bundle"/tests/gpu_*; do
    [[ -x "$t" ]] || continue
    run "test-$(basename "$t")" 0 "$t" --nocapture --test-threads=1 || failed=1
done
if [[ -x "$bundle/tests/lib" ]]; then
    run "test-lib-gpu" 0 "$bundle/tests/lib" gpu:: --nocapture --test-threads=1 || failed=1
fi
# A short training run on the embedded pair at the paper's settings (batch 100, widths 64,
# nz 512): on the GPU with iterations replayed from a CUDA graph (the default), launch by
# launch (--no-graph: the graph's gain), with TF32 convolutions (all, and --precision auto:
# the wide layers only), and the same run on this
# machine's CPU: seconds per training iteration of each (the summary line of each log), the
# GPU's memory report and the number of replayed iterations. The graph and no-graph runs must
# end with the same losses (compared below).
train_iters="${GPU_CHECK_TRAIN_ITERS:-60}"
train_runs=(cuda cuda-nograph cuda-tf32 cuda-auto cpu)
for r in "${train_runs[@]}"; do
    case "$r" in
        cuda) flags=(--device cuda) ;;
        cuda-nograph) flags=(--device cuda --no-graph) ;;
        cuda-tf32) flags=(--device cuda --precision tf32) ;;
        cuda-auto) flags=(--device cuda --precision auto) ;;
        cpu) flags=(--device cpu) ;;
    esac
    run "train-exp1-$r" 600 "$bundle/gtadapt" train "${flags[@]}" --experiment exp1 \
        --preset paper --epochs 1 --iters-per-epoch "$train_iters" \
        --out "$report_dir/train-exp1-$r" --force || failed=1
done
# Same bits with and without the graph (the losses line of metrics.jsonl, times removed).
strip_times() { sed -E 's/,"(train_)?seconds":[0-9.]+//g' "$1"; }
if [[ -f "$report_dir/train-exp1-cuda/metrics.jsonl" && -f "$report_dir/train-exp1-cuda-nograph/metrics.jsonl" ]]; then
    if diff <(strip_times "$report_dir/train-exp1-cuda/metrics.jsonl") \
        <(strip_times "$report_dir/train-exp1-cuda-nograph/metrics.jsonl") >/dev/null; then
        summary+=("| graph vs --no-graph metrics | same | |")
    else
        summary+=("| graph vs --no-graph metrics | DIFFER | |")
        failed=1
    fi
fi

if [[ "${GPU_CHECK_BENCHES:-1}" != 0 ]]; then
    export GTADAPT_BENCH_OUT="$bench_out"
    if [[ -f "$bundle/manifest.txt" ]]; then
        GTADAPT_BENCH_COMMIT="$(sed -n 's/^commit: //p' "$bundle/manifest.txt" | cut -c1-12)"
        export GTADAPT_BENCH_COMMIT
    fi
    # Benches report; a failing bench is listed but does not fail the check.
    if [[ -f "$bundle/reference/bench_ops.py" ]] && python3 -c 'import torch' 2>/dev/null; then
        run "bench-torch-ops" "$bench_timeout" python3 "$bundle/reference/bench_ops.py" \
            --device cuda --out "$bench_out/torch_ops-cuda.json" || true
    fi
    # The PyTorch reference iteration on the same GPU (FP32; phases and total), eager and
    # compiled (torch.compile, mode default; "torch.compile: not available (...)" in the log and
    # eager numbers when it cannot compile).
    if [[ -f "$bundle/reference/gta_torch.py" ]] && python3 -c 'import torch' 2>/dev/null; then
        for e in exp1 exp3; do
            for b in 100 64; do
                # torch.compile compiles for minutes: exp1 at batch 100 only, unless
                # GPU_CHECK_TORCH_COMPILE=all (or 0: none).
                modes=(eager)
                case "${GPU_CHECK_TORCH_COMPILE:-exp1-b100}" in
                    all) modes=(eager compiled) ;;
                    exp1-b100) [[ $e == exp1 && $b == 100 ]] && modes=(eager compiled) ;;
                esac
                for mode in "${modes[@]}"; do
                    flag=()
                    [[ $mode == compiled ]] && flag=(--compile)
                    run "bench-torch-iteration-$e-b$b-$mode" "$bench_timeout" python3 \
                        "$bundle/reference/gta_torch.py" bench --device cuda --experiment "$e" \
                        --batch "$b" --iters 20 --warmup 3 --threads 4 ${flag[@]+"${flag[@]}"} \
                        --out "$bench_out/torch_iteration-$e-b$b-$mode.json" || true
                done
            done
        done
    fi
    if [[ -x "$bundle/benches/kernels" ]]; then
        # cudarc loads libcudnn / libcublas by name: PyTorch's pip wheels ship them under
        # site-packages/nvidia/{cudnn,cublas}/lib (or torch/lib). Harmless when absent: the
        # bench then prints "cuDNN: not available (...)" and leaves those columns n/a.
        vendor_libs="$(python3 - "$report_dir" 2>/dev/null <<'PY' || true
import glob, os, site, sys
roots = list(site.getsitepackages()) + [site.getusersitepackages()]
try:
    import torch
    roots.append(os.path.dirname(os.path.dirname(torch.__file__)))
except Exception:
    pass
dirs = []
for r in roots:
    for pat in ("nvidia/cudnn/lib", "nvidia/cublas/lib", "nvidia/cu13/lib", "torch/lib"):
        for d in glob.glob(os.path.join(r, pat)):
            if os.path.isdir(d) and d not in dirs:
                dirs.append(d)
# cudarc (built for CUDA 12) tries libcublas.so, libcublas.so.12, ... but not .so.13 (CUDA 13
# wheels): a symlink named libcublas.so in a folder of the report makes any of them loadable.
shim = os.path.join(sys.argv[1], "vendor-libs")
for lib in ("cublas", "cudnn"):
    found = [os.path.join(d, f) for d in dirs for f in sorted(os.listdir(d))
             if f.startswith("lib%s.so" % lib)]
    if found:
        os.makedirs(shim, exist_ok=True)
        link = os.path.join(shim, "lib%s.so" % lib)
        if os.path.lexists(link):
            os.remove(link)
        os.symlink(found[-1], link)
if os.path.isdir(shim):
    dirs.insert(0, shim)
print(":".join(dirs))
PY
)"
        GTADAPT_BENCH_DEVICE=cuda LD_LIBRARY_PATH="${vendor_libs:+$vendor_libs:}${LD_LIBRARY_PATH:-}" \
            run "bench-kernels" "$bench_timeout" "$bundle/benches/kernels" --bench || true
        echo "vendor libraries: ${vendor_libs:-none found}" >>"$report_dir/logs/bench-kernels.log"
    fi
    if [[ -x "$bundle/benches/train_step" ]]; then
        GTADAPT_BENCH_DEVICE=cuda GTADAPT_BENCH_EXPERIMENTS=exp1,exp3 GTADAPT_BENCH_BATCHES=100,64 \
            GTADAPT_BENCH_ITERS=10 run "bench-train-step" "$bench_timeout" \
            "$bundle/benches/train_step" --bench || true
    fi
    if [[ "${GPU_CHECK_CPU_BENCHES:-0}" == 1 ]]; then
        for b in "$bundle"/benches/*; do
            [[ -x "$b" ]] || continue
            case "$(basename "$b")" in kernels | train_step) continue ;; esac
            run "bench-$(basename "$b")" "$bench_timeout" "$b" --bench || true
        done
    fi
fi

{
    echo "# gtadapt GPU check"
    echo
    echo "- date: $(date -u +%Y-%m-%dT%H:%M:%SZ), host: $(uname -srm)"
    if command -v nvidia-smi >/dev/null; then
        echo "- GPUs: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | paste -sd ';' -)"
    fi
    [[ -f "$bundle/manifest.txt" ]] && sed 's/^/- bundle /' "$bundle/manifest.txt"
    echo "- PTX: ${GTADAPT_PTX_DIR:-run-time NVRTC (cache $GTADAPT_PTX_CACHE)}"
    echo "- result: $([[ $failed -eq 0 ]] && echo 'PASS' || echo 'FAIL')"
    echo
    echo "| step | status | time |"
    echo "|---|---|---:|"
    printf '%s\n' "${summary[@]}"
    echo
    for r in "${train_runs[@]}"; do
        log="$report_dir/logs/train-exp1-$r.log"
        [[ -f "$log" ]] && grep -h "s per training iteration\|device memory\|replayed" "$log" \
            | sed "s/^/- train exp1 $r: /"
    done
    echo
    for t in "$bench_out"/kernels-cuda.md "$bench_out"/train_step-cuda.md; do
        [[ -f "$t" ]] || continue
        echo "## $(basename "$t")"
        echo
        sed 's/^# /### /' "$t"
        echo
    done
    if compgen -G "$bench_out/torch_iteration-*.json" >/dev/null; then
        echo "## PyTorch reference iteration (reference/gta_torch.py bench)"
        echo
        python3 - "$bench_out"/torch_iteration-*.json <<'PY' || true
import json, sys
print("| experiment | batch | mode | GPU | torch | ms / iteration (median) | phases ms | compile |")
print("|---|---:|---|---|---|---:|---|---|")
for p in sys.argv[1:]:
    j = json.load(open(p))
    m = j["median_s"]
    ph = ", ".join(f"{k} {1e3 * v:.1f}" for k, v in m.items() if k != "total")
    c = j.get("compile", {})
    note = "-" if not c.get("requested") else (
        f"ok, first step {c.get('first_step_s')} s" if c.get("ok")
        else f"not available ({c.get('error')})")
    print(f"| {j['experiment']} | {j['batch']} | {j.get('mode', 'eager')} | {j.get('gpu')} | "
          f"{j['torch']} | {1e3 * m['total']:.2f} | {ph} | {note} |")
PY
        echo
    fi
    cat "$report.sections"
} >"$report"
rm -f "$report.sections"
echo "gpu-check: $([[ $failed -eq 0 ]] && echo PASS || echo FAIL); report: $report"
exit $failed
