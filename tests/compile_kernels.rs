//! Compile checks without a GPU: every kernels/*.cu in the checkout (whatever exists when the
//! test runs) compiled by NVRTC to PTX for compute_80 and compute_90, then assembled by
//! `ptxas -v` for sm_80 and sm_90. Prints registers, shared memory, stack and spills per
//! kernel; a kernel that spills fails unless kernels/ptxas-spill-allowlist.txt lists it with
//! a reason.
//!
//! Tools (scripts/install-cuda-compilers.sh installs both from PyPI wheels and prints the
//! variables): libnvrtc.so.12 on LD_LIBRARY_PATH, ptxas as GTADAPT_PTXAS or on PATH. Missing
//! tools make the test print a SKIP line and pass, except with CI=true or
//! GTADAPT_REQUIRE_NVRTC=1, where they fail it.
//!
//! Optional: GTADAPT_PTXAS_REPORT=FILE also writes the report as markdown;
//! GTADAPT_PTX_OUT=DIR keeps the PTX (`<module>.compute_NN.ptx`).
//!
//! Run with the report shown: `cargo test --test compile_kernels -- --nocapture`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use gtadapt::gpu::{nvrtc, sources};

const ARCHS: [(i32, i32); 2] = [(8, 0), (9, 0)];

fn required() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
        || std::env::var("GTADAPT_REQUIRE_NVRTC").is_ok_and(|v| v == "1")
}

fn ptxas() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("GTADAPT_PTXAS").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("ptxas"))
            .find(|p| p.is_file())
    })
}

/// The tools, or None after printing why (panics instead when they are required).
fn tools() -> Option<PathBuf> {
    let mut missing = Vec::new();
    if !nvrtc::available() {
        missing.push("libnvrtc.so.12 (not loadable: put the NVRTC lib/ folder on LD_LIBRARY_PATH)");
    }
    let ptxas = ptxas();
    match &ptxas {
        None => missing.push("ptxas (set GTADAPT_PTXAS or put it on PATH)"),
        Some(p) if !p.is_file() => missing.push("ptxas (GTADAPT_PTXAS names no file)"),
        Some(_) => {}
    }
    if missing.is_empty() {
        return ptxas;
    }
    let msg = format!(
        "kernel compile checks: missing {}. Run `eval \"$(scripts/install-cuda-compilers.sh)\"` \
         first.",
        missing.join(" and ")
    );
    if required() {
        panic!("{msg} (required: CI=true or GTADAPT_REQUIRE_NVRTC=1)");
    }
    eprintln!("SKIP {msg}");
    None
}

fn kernel_files(ext: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("kernels");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == ext))
        .collect();
    v.sort();
    v
}

/// kernel → reason, from kernels/ptxas-spill-allowlist.txt.
fn allow_list() -> BTreeMap<String, String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("kernels/ptxas-spill-allowlist.txt");
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let mut map = BTreeMap::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, reason) = line
            .split_once(':')
            .unwrap_or_else(|| panic!("{}: `{line}`: expected `kernel: reason`", path.display()));
        let reason = reason.trim();
        assert!(
            !reason.is_empty(),
            "{}: `{}` needs a reason",
            path.display(),
            name.trim()
        );
        map.insert(name.trim().to_string(), reason.to_string());
    }
    map
}

#[derive(Debug, Default, Clone)]
struct Usage {
    registers: u32,
    smem: u32,
    stack: u32,
    spill_stores: u32,
    spill_loads: u32,
}

/// The number before `unit` in `text` (e.g. "12" of "Used 12 registers").
fn number_before(text: &str, unit: &str) -> Option<u32> {
    let i = text.find(unit)?;
    text[..i].split_whitespace().last()?.parse().ok()
}

/// Per-kernel usage from `ptxas -v` output.
fn parse_ptxas(log: &str) -> BTreeMap<String, Usage> {
    let mut map: BTreeMap<String, Usage> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in log.lines() {
        if let Some(rest) = line.split("Function properties for ").nth(1) {
            current = Some(rest.trim().to_string());
            map.entry(rest.trim().to_string()).or_default();
        } else if let Some(rest) = line.split("Compiling entry function '").nth(1) {
            let name = rest.split('\'').next().unwrap_or_default().to_string();
            map.entry(name.clone()).or_default();
            current = Some(name);
        } else if let Some(name) = &current {
            let u = map.get_mut(name).expect("entry");
            if line.contains("stack frame") {
                u.stack = number_before(line, "bytes stack frame").unwrap_or(0);
                u.spill_stores = number_before(line, "bytes spill stores").unwrap_or(0);
                u.spill_loads = number_before(line, "bytes spill loads").unwrap_or(0);
            } else if line.contains("Used ") && line.contains("registers") {
                u.registers = number_before(line, "registers").unwrap_or(0);
                u.smem = number_before(line, "bytes smem").unwrap_or(0);
            }
        }
    }
    map
}

#[test]
fn parses_ptxas_output() {
    let log = "ptxas info    : 0 bytes gmem\n\
        ptxas info    : Compiling entry function 'k1' for 'sm_80'\n\
        ptxas info    : Function properties for k1\n\
        \x20   8 bytes stack frame, 4 bytes spill stores, 4 bytes spill loads\n\
        ptxas info    : Used 40 registers, used 1 barriers, 128 bytes smem, 380 bytes cmem[0]\n\
        ptxas info    : Compiling entry function 'k2' for 'sm_80'\n\
        ptxas info    : Function properties for k2\n\
        \x20   0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\n\
        ptxas info    : Used 8 registers, 380 bytes cmem[0]\n";
    let m = parse_ptxas(log);
    let k1 = &m["k1"];
    assert_eq!(
        (
            k1.registers,
            k1.smem,
            k1.stack,
            k1.spill_stores,
            k1.spill_loads
        ),
        (40, 128, 8, 4, 4)
    );
    let k2 = &m["k2"];
    assert_eq!((k2.registers, k2.smem, k2.spill_stores), (8, 0, 0));
}

#[test]
fn every_kernel_compiles_for_sm80_and_sm90_without_spills() {
    let Some(ptxas) = tools() else { return };
    let headers: Vec<(String, String)> = kernel_files("cuh")
        .iter()
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read_to_string(p).unwrap(),
            )
        })
        .collect();
    let header_refs: Vec<(&str, &str)> = headers
        .iter()
        .map(|(n, t)| (n.as_str(), t.as_str()))
        .collect();
    let allow = allow_list();
    let ptx_out = std::env::var_os("GTADAPT_PTX_OUT").map(PathBuf::from);
    if let Some(d) = &ptx_out {
        std::fs::create_dir_all(d).unwrap();
    }
    let tmp = tempfile::tempdir().unwrap();
    let ptxas_version = Command::new(&ptxas)
        .arg("--version")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .last()
                .unwrap_or("")
                .to_string()
        })
        .unwrap_or_default();

    let mut failures = Vec::new();
    let mut rows = Vec::new();
    let files = kernel_files("cu");
    assert!(!files.is_empty(), "no kernels/*.cu");
    for file in &files {
        let module = file.file_stem().unwrap().to_string_lossy().into_owned();
        let src = std::fs::read_to_string(file).unwrap();
        let declared = sources::kernel_names(&src);
        for cc in ARCHS {
            let arch = nvrtc::ptx_arch(cc);
            let sm = format!("sm_{}{}", cc.0, cc.1);
            let ptx = match nvrtc::compile_ptx(&module, &src, &header_refs, &arch) {
                Ok(p) => p,
                Err(e) => {
                    failures.push(format!("{e}"));
                    continue;
                }
            };
            let ptx_path = tmp.path().join(format!("{module}.{arch}.ptx"));
            std::fs::write(&ptx_path, &ptx).unwrap();
            if let Some(d) = &ptx_out {
                std::fs::write(d.join(format!("{module}.{arch}.ptx")), &ptx).unwrap();
            }
            let out = Command::new(&ptxas)
                .args(["-v", "--gpu-name", &sm, "-o"])
                .arg(tmp.path().join(format!("{module}.{sm}.cubin")))
                .arg(&ptx_path)
                .output()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", ptxas.display()));
            let log = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            if !out.status.success() {
                failures.push(format!("module `{module}`: ptxas for {sm} failed:\n{log}"));
                continue;
            }
            let usage = parse_ptxas(&log);
            for k in &declared {
                if !usage.contains_key(k) {
                    failures.push(format!(
                        "module `{module}`, kernel `{k}`: declared with GTA_KERNEL but ptxas \
                         saw no entry `{k}` for {sm}"
                    ));
                }
            }
            for (kernel, u) in usage {
                let spills = u.spill_stores + u.spill_loads > 0;
                let note = match (spills, allow.get(&kernel)) {
                    (false, _) if u.stack > 0 => "local memory (stack), no spills".to_string(),
                    (false, _) => String::new(),
                    (true, Some(reason)) => format!("SPILLS, allowed: {reason}"),
                    (true, None) => {
                        failures.push(format!(
                            "module `{module}`, kernel `{kernel}` spills on {sm}: {} bytes \
                             stores, {} bytes loads (fix it, or list it with a reason in \
                             kernels/ptxas-spill-allowlist.txt)",
                            u.spill_stores, u.spill_loads
                        ));
                        "SPILLS (not allowed)".to_string()
                    }
                };
                rows.push(format!(
                    "| {module} | {kernel} | {sm} | {} | {} | {} | {} / {} | {note} |",
                    u.registers, u.smem, u.stack, u.spill_stores, u.spill_loads
                ));
            }
        }
    }
    let mut report = format!(
        "## ptxas -v: {} modules, NVRTC {:?}, {ptxas_version}\n\n\
         | module | kernel | arch | registers | smem bytes | stack bytes | spill st / ld bytes | note |\n\
         |---|---|---|---:|---:|---:|---:|---|\n",
        files.len(),
        nvrtc::version().unwrap_or_default()
    );
    for r in &rows {
        report.push_str(r);
        report.push('\n');
    }
    eprintln!("{report}");
    if let Some(p) = std::env::var_os("GTADAPT_PTXAS_REPORT") {
        std::fs::write(&p, &report).unwrap();
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n\n"));
}

/// cuobjdump: GTADAPT_CUOBJDUMP, else the wheel's binary under GTADAPT_CUDA_TOOLS, else PATH.
fn cuobjdump() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("GTADAPT_CUOBJDUMP").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    if let Some(d) = std::env::var_os("GTADAPT_CUDA_TOOLS").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(d).join("nvidia/cu13/bin/cuobjdump");
        if p.is_file() {
            return Some(p);
        }
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("cuobjdump"))
            .find(|p| p.is_file())
    })
}

/// SASS instruction counts per function of `cuobjdump -sass` output: (HMMA, LDL + STL, all).
fn sass_counts(sass: &str) -> BTreeMap<String, (usize, usize, usize)> {
    let mut map: BTreeMap<String, (usize, usize, usize)> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in sass.lines() {
        if let Some(rest) = line.trim().strip_prefix("Function : ") {
            current = Some(rest.trim().to_string());
            map.entry(rest.trim().to_string()).or_default();
        } else if let (Some(name), Some(body)) = (&current, line.split("*/").nth(1)) {
            // An instruction line: `/*0070*/   HMMA.1688.F32.TF32 R4, R8, R12, R4 ;`
            let op = body.split_whitespace().find(|w| !w.starts_with('@'));
            let Some(op) = op.filter(|o| o.chars().next().is_some_and(|c| c.is_ascii_uppercase()))
            else {
                continue;
            };
            let e = map.get_mut(name).expect("entry");
            e.2 += 1;
            if op.starts_with("HMMA") {
                e.0 += 1;
            }
            if op.starts_with("LDL") || op.starts_with("STL") {
                e.1 += 1;
            }
        }
    }
    map
}

#[test]
fn parses_sass() {
    let sass = "\t\tFunction : k1\n\
        \x20       /*0000*/                   MOV R1, c[0x0][0x28] ;  /* 0x00000a0000017a02 */\n\
        \x20       /*0010*/                   HMMA.1688.F32.TF32 R4, R8, R12, R4 ;  /* 0x0 */\n\
        \x20       /*0020*/              @!P0 STL [R1], R2 ;  /* 0x0 */\n\
        \t\tFunction : k2\n\
        \x20       /*0000*/                   EXIT ;  /* 0x0 */\n";
    let m = sass_counts(sass);
    assert_eq!(m["k1"], (1, 1, 3));
    assert_eq!(m["k2"], (0, 0, 1));
}

/// kernels/conv_tc.cu (TF32 mma.sync) assembled for sm_80 and sm_90, disassembled with
/// `cuobjdump -sass`: every kernel must contain HMMA (tensor-core) instructions and no
/// local-memory traffic (LDL/STL). Prints the counts with ptxas's registers and shared memory.
/// Skips without the tools, fails without them under CI=true / GTADAPT_REQUIRE_NVRTC=1.
#[test]
fn tensor_core_conv_kernels_have_hmma_in_sass() {
    let Some(ptxas) = tools() else { return };
    let Some(cuobjdump) = cuobjdump().filter(|p| p.is_file()) else {
        let msg = "SASS check: cuobjdump missing (set GTADAPT_CUOBJDUMP, or run \
                   `eval \"$(scripts/install-cuda-compilers.sh)\"`)";
        if required() {
            panic!("{msg} (required: CI=true or GTADAPT_REQUIRE_NVRTC=1)");
        }
        eprintln!("SKIP {msg}");
        return;
    };
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("kernels");
    let headers: Vec<(String, String)> = kernel_files("cuh")
        .iter()
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read_to_string(p).unwrap(),
            )
        })
        .collect();
    let header_refs: Vec<(&str, &str)> = headers
        .iter()
        .map(|(n, t)| (n.as_str(), t.as_str()))
        .collect();
    let src = std::fs::read_to_string(dir.join("conv_tc.cu")).unwrap();
    let declared = sources::kernel_names(&src);
    assert_eq!(declared.len(), 6, "conv_tc.cu kernels: {declared:?}");
    let tmp = tempfile::tempdir().unwrap();
    let mut report = String::from(
        "| kernel | arch | registers | smem bytes | HMMA | LDL+STL | SASS instructions |\n\
         |---|---|---:|---:|---:|---:|---:|\n",
    );
    let mut failures = Vec::new();
    for cc in ARCHS {
        let arch = nvrtc::ptx_arch(cc);
        let sm = format!("sm_{}{}", cc.0, cc.1);
        let ptx = nvrtc::compile_ptx("conv_tc", &src, &header_refs, &arch)
            .unwrap_or_else(|e| panic!("conv_tc for {arch}: {e}"));
        assert!(
            ptx.contains("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32"),
            "no TF32 mma.sync in the PTX"
        );
        let ptx_path = tmp.path().join(format!("conv_tc.{arch}.ptx"));
        let cubin = tmp.path().join(format!("conv_tc.{sm}.cubin"));
        std::fs::write(&ptx_path, &ptx).unwrap();
        let out = Command::new(&ptxas)
            .args(["-v", "--gpu-name", &sm, "-o"])
            .arg(&cubin)
            .arg(&ptx_path)
            .output()
            .unwrap();
        let log = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "ptxas {sm}:\n{log}");
        let usage = parse_ptxas(&log);
        // cuobjdump -sass runs nvdisasm from PATH: the wheels put it beside cuobjdump.
        let mut path = vec![cuobjdump.parent().unwrap_or(Path::new(".")).to_path_buf()];
        path.extend(std::env::split_paths(
            &std::env::var_os("PATH").unwrap_or_default(),
        ));
        let out = Command::new(&cuobjdump)
            .env("PATH", std::env::join_paths(path).unwrap())
            .arg("-sass")
            .arg(&cubin)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", cuobjdump.display()));
        let sass = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "cuobjdump -sass {sm}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let counts = sass_counts(&sass);
        for k in &declared {
            let (hmma, local, total) = counts.get(k).copied().unwrap_or_default();
            let u = usage.get(k).cloned().unwrap_or_default();
            report.push_str(&format!(
                "| {k} | {sm} | {} | {} | {hmma} | {local} | {total} |\n",
                u.registers, u.smem
            ));
            if hmma == 0 {
                failures.push(format!("{k} ({sm}): no HMMA in the SASS"));
            }
            if local > 0 {
                failures.push(format!("{k} ({sm}): {local} LDL/STL (local memory)"));
            }
        }
    }
    eprintln!("## SASS of kernels/conv_tc.cu (cuobjdump -sass)\n\n{report}");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
