#!/usr/bin/env bash
# One-shot GPU validation over binaries built elsewhere (scripts/gpu-bundle.sh): for a GPU
# machine with no Rust and no network. Needs only bash and coreutils.
#
#   scripts/gpu-check.sh [BUNDLE] [REPORT_DIR]
#     BUNDLE      default: gpu-bundle/ next to this script's repo
#     REPORT_DIR  default: $OUT if set, else ./gpu-report
#
# Runs `gtadapt info` and `gtadapt kernels check --device cuda`; a short exp1 training run on
# the GPU and the same on the CPU (GPU_CHECK_TRAIN_ITERS iterations, default 60); the GPU-capable test
# executables with GTADAPT_REQUIRE_GPU=1 (a missing GPU fails them instead of skipping):
# every tests/gpu_* target, and the library's unit tests filtered to `gpu::`; then every
# bench executable (each under a time limit, GPU_CHECK_BENCH_TIMEOUT seconds, default 300;
# GPU_CHECK_BENCHES=0 skips them). Writes
# REPORT_DIR/gpu-check.md (and each command's full log next to it). Exit status: 0 when every
# test passed.
set -uo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
bundle="$(cd "${1:-$here/gpu-bundle}" && pwd)" || {
    echo "gpu-check: no bundle at ${1:-$here/gpu-bundle} (build one with scripts/gpu-bundle.sh)" >&2
    exit 2
}
report_dir="${2:-${OUT:-$PWD/gpu-report}}"
mkdir -p "$report_dir/logs"
report="$report_dir/gpu-check.md"
bench_timeout="${GPU_CHECK_BENCH_TIMEOUT:-300}"

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
# nz 512), on the GPU and then the same run on this machine's CPU: seconds per training
# iteration of each (the summary line of each log) and the GPU's memory report.
train_iters="${GPU_CHECK_TRAIN_ITERS:-60}"
for dev in cuda cpu; do
    run "train-exp1-$dev" 600 "$bundle/gtadapt" train --device "$dev" --experiment exp1 \
        --preset paper --epochs 1 --iters-per-epoch "$train_iters" \
        --out "$report_dir/train-exp1-$dev" --force || failed=1
done

if [[ "${GPU_CHECK_BENCHES:-1}" != 0 ]]; then
    for b in "$bundle"/benches/*; do
        [[ -x "$b" ]] || continue
        # Benches report; a failing bench is listed but does not fail the check.
        run "bench-$(basename "$b")" "$bench_timeout" "$b" --bench || true
    done
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
    for dev in cuda cpu; do
        log="$report_dir/logs/train-exp1-$dev.log"
        [[ -f "$log" ]] && grep -h "s per training iteration\|device memory" "$log" \
            | sed "s/^/- train exp1 $dev: /"
    done
    echo
    cat "$report.sections"
} >"$report"
rm -f "$report.sections"
echo "gpu-check: $([[ $failed -eq 0 ]] && echo PASS || echo FAIL); report: $report"
exit $failed
