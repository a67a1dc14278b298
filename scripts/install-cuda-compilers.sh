#!/usr/bin/env bash
# Installs the NVIDIA compilers the kernel compile checks need, from PyPI wheels (no CUDA
# toolkit, no GPU, no root): NVRTC (libnvrtc.so.12 + libnvrtc-builtins), ptxas, and cuobjdump
# (SASS inspection: tests/compile_kernels.rs checks the tensor-core kernels' HMMA).
#
#   scripts/install-cuda-compilers.sh [DIR]        # default DIR: .cuda-tools in the repo root
#   eval "$(scripts/install-cuda-compilers.sh)"    # install (if needed) and export the env vars
#
# Progress goes to stderr; stdout is only the `export` lines:
#   LD_LIBRARY_PATH   gets the wheel's lib/ folder, so cudarc's loader finds libnvrtc.so.12
#                     (and NVRTC finds libnvrtc-builtins next to it)
#   GTADAPT_PTXAS     the wheel's ptxas
#   GTADAPT_CUOBJDUMP the cuobjdump wheel's binary
#   GTADAPT_CUDA_TOOLS  DIR
# Idempotent: a stamp file records the pinned versions; rerunning with them installed only
# prints the exports. Pinned versions (the newest 12.x on PyPI when pinned): change both
# together. cuobjdump has no 12.x wheel on PyPI (no nvidia-cuda-cuobjdump-cu12 at all; the
# nvidia-cuda-cuobjdump project starts at 13.2): 13.x disassembles the sm_80/sm_90 cubins of
# the 12.9 ptxas (ELF cubins; CUDA 13 dropped only pre-Turing targets). cuobjdump -sass runs
# nvdisasm, which the nvidia-cuda-nvdisasm wheel (same version) puts next to it.
set -euo pipefail

NVRTC_VERSION=12.9.86
NVCC_VERSION=12.9.86
CUOBJDUMP_VERSION=13.4.92

root="$(cd "$(dirname "$0")/.." && pwd)"
dir="${1:-$root/.cuda-tools}"
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
stamp="$dir/.installed-nvrtc-$NVRTC_VERSION-nvcc-$NVCC_VERSION-cuobjdump-$CUOBJDUMP_VERSION"

py="$(command -v python3 || command -v python || true)"
if [[ ! -f "$stamp" ]]; then
    if [[ -z "$py" ]]; then
        echo "install-cuda-compilers: python3 with pip is needed" >&2
        exit 1
    fi
    echo "install-cuda-compilers: pip-installing nvidia-cuda-nvrtc-cu12==$NVRTC_VERSION" \
        "nvidia-cuda-nvcc-cu12==$NVCC_VERSION nvidia-cuda-cuobjdump==$CUOBJDUMP_VERSION nvidia-cuda-nvdisasm==$CUOBJDUMP_VERSION into $dir" >&2
    rm -rf "$dir/nvidia" "$dir"/.installed-*
    PIP_ROOT_USER_ACTION=ignore "$py" -m pip install --quiet --disable-pip-version-check --no-deps --upgrade \
        --target "$dir" \
        "nvidia-cuda-nvrtc-cu12==$NVRTC_VERSION" "nvidia-cuda-nvcc-cu12==$NVCC_VERSION" \
        "nvidia-cuda-cuobjdump==$CUOBJDUMP_VERSION" "nvidia-cuda-nvdisasm==$CUOBJDUMP_VERSION" >&2
    touch "$stamp"
fi

lib="$dir/nvidia/cuda_nvrtc/lib"
ptxas="$dir/nvidia/cuda_nvcc/bin/ptxas"
cuobjdump="$dir/nvidia/cu13/bin/cuobjdump"
if [[ ! -e "$lib/libnvrtc.so.12" ]]; then
    echo "install-cuda-compilers: $lib/libnvrtc.so.12 missing after install" >&2
    exit 1
fi
if [[ ! -x "$ptxas" ]]; then
    echo "install-cuda-compilers: $ptxas missing after install" >&2
    exit 1
fi
if [[ ! -x "$cuobjdump" || ! -x "$(dirname "$cuobjdump")/nvdisasm" ]]; then
    echo "install-cuda-compilers: $cuobjdump or nvdisasm beside it missing after install" >&2
    exit 1
fi
# cudarc also tries the plain name libnvrtc.so first; give it one in a folder we control.
ln -sf libnvrtc.so.12 "$lib/libnvrtc.so"
echo "install-cuda-compilers: $("$ptxas" --version | tail -1)" >&2

echo "export LD_LIBRARY_PATH=\"$lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}\""
echo "export GTADAPT_PTXAS=\"$ptxas\""
echo "export GTADAPT_CUOBJDUMP=\"$cuobjdump\""
echo "export GTADAPT_CUDA_TOOLS=\"$dir\""
