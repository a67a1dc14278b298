//! The self-test kernels of kernels/selftest.cu through the backend-neutral [`Memory`] API:
//! always on the emulator, and on the GPU when one is usable (the CUDA executor; with
//! GTADAPT_REQUIRE_GPU=1 a missing GPU fails the test instead of skipping it — that is how
//! scripts/gpu-check.sh runs it).

use gtadapt::gpu::kernels::selftest::{
    selftest_ints, SelftestIntParams, SelftestTransposeParams, SelftestVecParams,
};
use gtadapt::gpu::{cuda, Buffer, Emulator, GpuError, LaunchConfig, Memory};

/// Every check, on executor `e`.
fn selftests<E: Memory>(e: &E) -> Result<(), GpuError> {
    println!("executor: {}", e.name());
    // Block sums (shuffles + a barrier), both kernels.
    let (n, blocks, threads) = (100_003usize, 37usize, 256u32);
    let xs: Vec<f32> = selftest_ints(n, -8, 9, 1)
        .into_iter()
        .map(|v| v as f32)
        .collect();
    let x = e.upload(&xs)?;
    let out = e.filled(blocks, f32::NAN)?;
    let mut expected = vec![0f64; blocks];
    for (i, v) in xs.iter().enumerate() {
        expected[(i / threads as usize) % blocks] += *v as f64;
    }
    let expected: Vec<f32> = expected.into_iter().map(|s| s as f32).collect();
    for kernel in ["selftest_block_sum", "selftest_block_sum_helper"] {
        let p = SelftestVecParams {
            x: x.device_ptr(),
            out: out.device_ptr(),
            n: n as u32,
            pad: 0,
        };
        // SAFETY: p mirrors SelftestVecParams; x holds n floats, out one per block.
        unsafe { e.launch_with(kernel, LaunchConfig::linear(blocks as u32, threads), &p) }?;
        assert_eq!(out.read()?, expected, "{kernel} on {}", e.name());
    }

    // Transpose through a shared tile.
    let (rows, cols) = (45usize, 77usize);
    let xs: Vec<f32> = (0..rows * cols).map(|i| i as f32 * 0.5 - 3.0).collect();
    let x = e.upload(&xs)?;
    let out = e.filled(rows * cols, f32::NAN)?;
    let cfg = LaunchConfig {
        grid: [(cols as u32).div_ceil(32), (rows as u32).div_ceil(32), 1],
        block: [32, 8, 1],
        dynamic_smem: 0,
    };
    let p = SelftestTransposeParams {
        input: x.device_ptr(),
        out: out.device_ptr(),
        rows: rows as u32,
        cols: cols as u32,
    };
    // SAFETY: p mirrors SelftestTransposeParams; both buffers hold rows*cols floats.
    unsafe { e.launch_with("selftest_transpose", cfg, &p) }?;
    let got = out.read()?;
    for r in 0..rows {
        for c in 0..cols {
            assert_eq!(got[c * rows + r], xs[r * cols + c], "transpose ({r},{c})");
        }
    }

    // Block scan and histogram (shared atomics, then global).
    let (n, threads) = (3000usize, 1024u32);
    let xs = selftest_ints(n, -50, 50, 7);
    let x = e.upload(&xs)?;
    let mut out = e.filled(n, 0xDEADBEEFu32 as i32)?;
    let p = SelftestIntParams {
        x: x.device_ptr(),
        out: out.device_ptr(),
        n: n as u32,
        bins: 0,
    };
    // SAFETY: p mirrors SelftestIntParams; both buffers hold n ints.
    unsafe { e.launch_with("selftest_scan", LaunchConfig::for_elements(n, threads), &p) }?;
    let mut expected = Vec::new();
    for chunk in xs.chunks(threads as usize) {
        let mut acc = 0;
        expected.extend(chunk.iter().map(|v| {
            acc += v;
            acc
        }));
    }
    assert_eq!(out.read()?, expected, "scan");
    let bins = 37u32;
    let xs = selftest_ints(n, 0, 1000, 3);
    let x = e.upload(&xs)?;
    out.write(&vec![0; n])?;
    let p = SelftestIntParams {
        x: x.device_ptr(),
        out: out.device_ptr(),
        n: n as u32,
        bins,
    };
    // SAFETY: as above; out holds n >= bins ints, zeroed.
    unsafe { e.launch_with("selftest_histogram", LaunchConfig::linear(13, 96), &p) }?;
    let mut hist = vec![0; bins as usize];
    for v in &xs {
        hist[*v as usize % bins as usize] += 1;
    }
    assert_eq!(&out.read()?[..bins as usize], &hist[..], "histogram");

    // Dynamic shared memory.
    let (n, threads) = (1000usize, 128u32);
    let xs: Vec<f32> = (0..n).map(|i| i as f32 + 0.25).collect();
    let x = e.upload(&xs)?;
    let out = e.filled(n, f32::NAN)?;
    let p = SelftestVecParams {
        x: x.device_ptr(),
        out: out.device_ptr(),
        n: n as u32,
        pad: 0,
    };
    let cfg = LaunchConfig::for_elements(n, threads).with_dynamic_smem(threads as usize * 4);
    // SAFETY: p mirrors SelftestVecParams; both buffers hold n floats; smem = blockDim floats.
    unsafe { e.launch_with("selftest_dyn_reverse", cfg, &p) }?;
    let t = threads as usize;
    let expected: Vec<f32> = (0..n)
        .map(|i| xs.get(i / t * t + (t - 1 - i % t)).copied().unwrap_or(0.0))
        .collect();
    assert_eq!(out.read()?, expected, "dynamic shared memory");

    // Errors name the kernel.
    // SAFETY: rejected before launch (unknown kernel / too many threads).
    let err = unsafe { e.launch_with("no_such_kernel", LaunchConfig::linear(1, 32), &p) };
    assert!(
        matches!(err, Err(GpuError::UnknownKernel { .. })),
        "{err:?}"
    );
    // SAFETY: as above.
    let err = unsafe { e.launch_with("selftest_block_sum", LaunchConfig::linear(1, 2048), &p) }
        .unwrap_err();
    assert!(err.to_string().contains("selftest_block_sum"), "{err}");
    Ok(())
}

#[test]
fn selftests_on_the_emulator() {
    selftests(&Emulator::new()).unwrap();
}

#[test]
fn selftests_on_the_gpu() {
    let Some(gpu) = cuda::executor_for_tests() else {
        return;
    };
    println!(
        "GPU: {} (compute capability {:?}), kernels: {}",
        gpu.device_name(),
        gpu.compute_capability(),
        cuda::KernelPath::current()
    );
    selftests(&gpu).unwrap_or_else(|e| panic!("{e}"));
}
