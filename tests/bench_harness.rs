//! The kernel benchmark harness (gtadapt::bench, benches/kernels.rs) at a CI size on the SIMT
//! emulator: every row runs, the markdown table and the JSON are well-formed, and
//! reference/bench_ops.py's JSON joins by (name, direction). Never asserts on timing values
//! beyond "a finite positive number was measured".

use gtadapt::bench::{self, Config};
use gtadapt::gpu::Emulator;

fn tiny() -> Config {
    Config {
        reps: 1,
        warmup: 1,
        ..Config::tiny()
    }
}

#[test]
fn tiny_run_produces_well_formed_table_and_json() {
    let cfg = tiny();
    let mut report = bench::run(&Emulator::new(), &cfg, false).expect("harness run");
    let expected = 3 * bench::conv_layers(&cfg).len()
        + 2 * bench::bn_layers(&cfg).len()
        + 2 * bench::pool_layers(&cfg).len()
        + 3 * bench::linear_layers(&cfg).len()
        + 6 // CE[.,10], CE[.,11], BCE: forward and backward
        + 5 // the fused losses: CE ×2 (forward+grad, backward), BCE forward+grad
        + 2 // Adam: flat buffer, per-tensor segments (one launch)
        + 2; // gather
    assert_eq!(report.rows.len(), expected);
    let sizes = bench::adam_tensor_sizes(&cfg);
    assert!(sizes.len() > 10 && sizes.iter().sum::<usize>() == bench::adam_params(&cfg));
    for r in &report.rows {
        let ms =
            r.ms.unwrap_or_else(|| panic!("{} {} did not run: {}", r.name, r.direction, r.note));
        assert!(
            ms.is_finite() && ms > 0.0,
            "{} {}: {ms}",
            r.name,
            r.direction
        );
        assert!(r.bytes > 0.0 && r.flop >= 0.0 && r.sets >= 1);
    }
    // Every conv layer in all three directions, FLOPs equal across directions.
    for l in bench::conv_layers(&cfg) {
        let rows: Vec<_> = report.rows.iter().filter(|r| r.name == l.name).collect();
        assert_eq!(rows.len(), 3, "{}", l.name);
        assert!(rows
            .iter()
            .all(|r| r.flop == l.flop(cfg.batch) && r.flop > 0.0));
    }
    assert!(report.ceilings.copy_gbs > 0.0 && report.ceilings.gemm_gflops > 0.0);

    // Join a PyTorch JSON as reference/bench_ops.py writes it.
    let torch = serde_json::json!({
        "meta": {"torch": "2.x", "device": "cpu", "cudnn": null},
        "ceilings": {"gemm_fp32_gflops": 1e3, "gemm_tf32_gflops": null, "copy_gbs": 10.0},
        "rows": [
            {"name": "D.conv2", "direction": "forward", "ms": 0.5},
            {"name": "D.conv2", "direction": "backward-filter", "ms": 0.25},
            {"name": "no.such", "direction": "forward", "ms": 1.0}
        ]
    });
    assert_eq!(report.join_torch(&torch.to_string()).unwrap(), 2);
    assert_eq!(
        report.ceilings.fp32_peak(),
        1e3f64.max(report.ceilings.gemm_gflops)
    );

    let md = report.to_markdown();
    assert!(md.starts_with("# gtadapt kernel benchmark"), "{md}");
    assert!(md.contains("PyTorch 2.x on cpu"));
    let header = md
        .lines()
        .find(|l| l.starts_with("| family |"))
        .expect("table header");
    let cols = header.matches('|').count();
    let table: Vec<&str> = md
        .lines()
        .filter(|l| {
            l.starts_with("| ") && !l.starts_with("| family") && l.matches('|').count() == cols
        })
        .collect();
    assert!(table.len() >= expected, "{} table rows", table.len());
    let joined = table
        .iter()
        .find(|l| l.contains("| D.conv2 | forward |"))
        .unwrap();
    // The PyTorch / ours cell (13th column) is filled.
    let cells: Vec<&str> = joined.split('|').map(str::trim).collect();
    assert!(cells[12].parse::<f64>().is_ok(), "{joined}");
    assert!(cells[13].parse::<f64>().is_ok(), "{joined}");
    assert!(md.contains("| conv | 2 |"), "per-family geomean: {md}");

    let dir = tempfile::tempdir().unwrap();
    report.write(dir.path(), "kernels-emu").unwrap();
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("kernels-emu.json")).unwrap(),
    )
    .unwrap();
    for key in ["device", "driver", "cpu", "commit", "date", "clock"] {
        assert!(json[key].is_string(), "{key}: {json}");
    }
    let date = json["date"].as_str().unwrap();
    assert!(
        date.len() == 20 && date.ends_with('Z') && date.as_bytes()[10] == b'T',
        "{date}"
    );
    let rows = json["rows"].as_array().unwrap();
    assert_eq!(rows.len(), expected);
    for r in rows {
        for key in ["family", "name", "direction", "shape", "bound"] {
            assert!(r[key].is_string(), "{key}: {r}");
        }
        assert!(
            r["ms"].as_f64().is_some() && r["bytes"].as_f64().is_some(),
            "{r}"
        );
    }
    assert!(json["ceilings"]["copy_gbs"].as_f64().unwrap() > 0.0);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("kernels-emu.md")).unwrap(),
        md
    );
}

#[test]
fn filter_selects_rows() {
    let cfg = Config {
        filter: vec!["D.conv4 backward-data".into(), "Adam".into()],
        ..tiny()
    };
    let report = bench::run(&Emulator::new(), &cfg, false).unwrap();
    let names: Vec<String> = report
        .rows
        .iter()
        .map(|r| format!("{} {}", r.name, r.direction))
        .collect();
    assert_eq!(
        names,
        [
            "D.conv4 backward-data",
            "Adam(exp1) step",
            "Adam(exp1) step, per-tensor segments"
        ]
    );
}

#[test]
fn layer_tables_match_the_gta_shapes() {
    let cfg = Config::gta(100);
    let convs = bench::conv_layers(&cfg);
    assert_eq!(convs.len(), 20);
    let g1 = convs.iter().find(|l| l.name == "G.convT1").unwrap();
    assert_eq!((g1.cin, g1.cout, g1.out_size()), (651, 512, 2));
    let g4 = convs.iter().find(|l| l.name == "G4.convT1").unwrap();
    assert_eq!(g4.out_size(), 4);
    // The last layer of every generator makes 32×32 images; D_src ends at 1×1.
    for n in ["G.convT5", "G4.convT4", "D_src.conv1"] {
        let l = convs.iter().find(|l| l.name == n).unwrap();
        assert_eq!(
            l.out_size(),
            if n == "D_src.conv1" { 16 } else { 32 },
            "{n}"
        );
    }
    let last = convs.iter().find(|l| l.name == "D_src.conv4").unwrap();
    assert_eq!(last.out_size(), 1);
    // 2·N·Cout·Ho·Wo·Cin·k² for D.conv2: 2·100·128·16·16·64·9.
    let d2 = convs.iter().find(|l| l.name == "D.conv2").unwrap();
    assert_eq!(d2.flop(100), 2.0 * 100.0 * 128.0 * 256.0 * 64.0 * 9.0);
    assert!(bench::adam_params(&cfg) > 4_000_000);
}

/// The vendor probe on a machine without cuDNN / cuBLAS (or without a GPU): a clean "not
/// available" with a reason, never a panic; and a report without vendor figures marks the
/// vendor columns "n/a" in the markdown and the JSON (and "-" for families no vendor covers).
#[test]
fn vendor_probe_and_unmeasured_vendor_columns_are_n_a() {
    use gtadapt::bench::vendor;
    let probe = vendor::probe(); // must not panic, whatever this machine has
    for (lib, r) in [("cuDNN", &probe.cudnn), ("cuBLAS", &probe.cublas)] {
        let line = vendor::status_line(lib, r);
        match r {
            Ok(v) => assert_eq!(line, format!("{lib}: {v}")),
            Err(e) => {
                assert!(!e.is_empty());
                assert_eq!(line, format!("{lib}: not available ({e})"));
            }
        }
    }
    // This crate's CI machines have neither library: the probe says so, naming the library.
    let here = |lib: &str| {
        ["/usr/lib", "/usr/local", "/opt"].iter().any(|d| {
            std::process::Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "find {d} -name 'lib{lib}.so*' 2>/dev/null | grep -q ."
                ))
                .status()
                .is_ok_and(|s| s.success())
        }) || std::env::var("LD_LIBRARY_PATH").is_ok_and(|p| !p.is_empty())
    };
    if !here("cudnn") {
        let e = probe.cudnn.clone().unwrap_err();
        assert!(e.contains("libcudnn not found"), "{e}");
    }
    if !here("cublas") {
        let e = probe.cublas.clone().unwrap_err();
        assert!(e.contains("libcublas not found"), "{e}");
    }

    let cfg = Config {
        filter: vec![
            "D.conv4 forward".into(),
            "C1.fc1 forward".into(),
            "Adam".into(),
        ],
        ..tiny()
    };
    let mut report = bench::run(&Emulator::new(), &cfg, false).unwrap();
    report.vendor = vendor::Vendors {
        cudnn: Err("libcudnn not found (test)".into()),
        cublas: Err("libcublas not found (test)".into()),
    };
    let md = report.to_markdown();
    assert!(
        md.contains("cuDNN: not available (libcudnn not found (test))"),
        "{md}"
    );
    assert!(md.contains("cuBLAS: not available (libcublas not found (test))"));
    let row = |name: &str| {
        md.lines()
            .find(|l| l.contains(&format!("| {name} |")))
            .unwrap_or_else(|| panic!("{name}: {md}"))
            .to_string()
    };
    for name in ["D.conv4", "C1.fc1"] {
        assert!(
            row(name).trim_end().ends_with("| n/a | n/a | n/a |"),
            "{}",
            row(name)
        );
    }
    assert!(row("Adam(exp1)").trim_end().ends_with("| - | - | - |"));
    assert!(md.contains("(cuBLAS SGEMM via cudarc)") && md.contains("n/a (cuBLAS SGEMM"));
    assert!(md.contains("| conv | cuDNN FP32 | 0 | n/a |"), "{md}");

    let json = report.to_json();
    assert_eq!(json["vendor"]["cudnn"]["available"], false);
    assert!(json["vendor"]["cudnn"]["reason"]
        .as_str()
        .unwrap()
        .contains("libcudnn"));
    for r in json["rows"].as_array().unwrap() {
        let v = &r["vendor"];
        match r["family"].as_str().unwrap() {
            "conv" | "linear" => {
                assert_eq!(v["status"], "n/a", "{r}");
                assert!(
                    v["ms"].is_null() && v["tf32_ms"].is_null() && v["ours_over_vendor"].is_null()
                );
                assert_eq!(
                    v["lib"],
                    if r["family"] == "conv" {
                        "cuDNN"
                    } else {
                        "cuBLAS"
                    }
                );
            }
            _ => assert!(v.is_null(), "{r}"),
        }
    }
    assert!(json["ceilings"]["cublas_fp32_gflops"].is_null());

    // Measured vendor figures fill the cells and the ratio (ours / vendor).
    let i = report
        .rows
        .iter()
        .position(|r| r.name == "D.conv4")
        .unwrap();
    let ours = report.rows[i].ms.unwrap();
    report.rows[i].vendor = Some(vendor::VendorTiming {
        ms: Some(ours / 2.0),
        tf32_ms: Some(ours / 4.0),
        note: "test".into(),
    });
    let md = report.to_markdown();
    assert!(
        row_of(&md, "D.conv4").trim_end().ends_with("| 2.00 |"),
        "{md}"
    );
    assert!(md.contains("| conv | cuDNN FP32 | 1 | 2.00 |"), "{md}");
    assert!(md.contains("| conv | cuDNN TF32 | 1 | 4.00 |"), "{md}");
    let v = &report.to_json()["rows"][i]["vendor"];
    assert_eq!(v["status"], "measured");
    assert!((v["ours_over_vendor"].as_f64().unwrap() - 2.0).abs() < 1e-9);
}

fn row_of(md: &str, name: &str) -> String {
    md.lines()
        .find(|l| l.contains(&format!("| {name} |")))
        .unwrap()
        .to_string()
}
