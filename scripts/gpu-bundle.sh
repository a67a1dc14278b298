#!/usr/bin/env bash
# Builds what scripts/gpu-check.sh runs on a GPU machine that has no Rust and no network:
#
#   scripts/gpu-bundle.sh [DIR]      # default DIR: gpu-bundle/ in the repo root
#
# DIR/gtadapt                  the release binary
# DIR/tests/<target>           release test executables (`cargo test --release --no-run`);
#                              `lib` is the library's unit tests
# DIR/benches/<target>         bench executables (`cargo bench --no-run`)
# DIR/ptx/<module>.compute_NN.ptx  PTX of every kernels/*.cu for compute_80 and compute_90,
#                              when NVRTC is available here (scripts/install-cuda-compilers.sh):
#                              gpu-check.sh sets GTADAPT_PTX_DIR to it, so the GPU machine needs
#                              no NVRTC. (PTX from NVRTC 12.9 needs a driver for CUDA >= 12.9;
#                              for an older driver, install an older NVRTC first.)
# DIR/reference/               the PyTorch scripts gpu-check.sh runs beside the benches
#                              (bench_ops.py, gta_torch.py)
# DIR/manifest.txt             commit, toolchain, date
# Set CUDA_COMPUTE_CAP / NVCC as for any build. Needs cargo and python3 (to read cargo's JSON).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
dir="${1:-$root/gpu-bundle}"
rm -rf "$dir"
mkdir -p "$dir/tests" "$dir/benches" "$dir/ptx" "$dir/reference"
dir="$(cd "$dir" && pwd)"

copy_executables() { # $1: subfolder; stdin: cargo JSON messages
    python3 -c '
import json, shutil, sys, os
dest = sys.argv[1]
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") != "compiler-artifact" or not m.get("executable"):
        continue
    t = m["target"]
    if t["name"] == "gtadapt" and "bin" in t["kind"]:
        continue
    name = "lib" if "lib" in t["kind"] else t["name"]
    shutil.copy2(m["executable"], os.path.join(dest, name))
    print("  " + os.path.join(os.path.basename(dest), name))
' "$1"
}

echo "== cargo build --release"
cargo build --release --locked
cp "${CARGO_TARGET_DIR:-$root/target}/release/gtadapt" "$dir/gtadapt"
echo "== cargo test --release --no-run"
cargo test --release --locked --no-run --message-format=json | copy_executables "$dir/tests"
echo "== cargo bench --no-run"
cargo bench --locked --no-run --message-format=json | copy_executables "$dir/benches"

cp reference/bench_ops.py reference/gta_torch.py "$dir/reference/"
echo "== PTX for compute_80 and compute_90 (NVRTC)"
if GTADAPT_PTX_OUT="$dir/ptx" GTADAPT_REQUIRE_NVRTC=1 "$dir/tests/compile_kernels" \
    --test-threads=1 >/dev/null 2>&1; then
    ls "$dir/ptx"
else
    echo "  NVRTC not available here: the GPU machine compiles kernels with its own NVRTC"
    rmdir "$dir/ptx" 2>/dev/null || true
fi
{
    echo "commit: $(git rev-parse HEAD 2>/dev/null || echo unknown)"
    echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -srm)"
    echo "rustc: $(rustc --version)"
    echo "CUDA_COMPUTE_CAP: ${CUDA_COMPUTE_CAP:-unset}"
} >"$dir/manifest.txt"
du -sh "$dir"
echo "bundle ready: copy $dir to the GPU machine and run scripts/gpu-check.sh $dir"
