//! Runtime compilation of kernels/*.cu to PTX with NVRTC (loaded dynamically through cudarc:
//! a machine without libnvrtc gets [`NvrtcError::Unavailable`], never a panic).
//!
//! The headers a kernel includes (`common.cuh`, `params.cuh`) are handed to NVRTC by name, so
//! nothing is read from disk: the program compiles the copies embedded at build time, the
//! compile-check test (tests/compile_kernels.rs) the files of the checkout.

use std::ffi::{c_char, CStr, CString};

use cudarc::nvrtc::sys;

/// A failed NVRTC compilation. Every variant names the module (the kernels/*.cu file).
#[derive(Debug, thiserror::Error)]
pub enum NvrtcError {
    #[error(
        "module `{module}`: the NVRTC library (libnvrtc.so.12) could not be loaded; install the \
         CUDA toolkit, or `scripts/install-cuda-compilers.sh` and put its lib/ folder on \
         LD_LIBRARY_PATH"
    )]
    Unavailable { module: String },
    #[error("module `{module}`: NVRTC compilation for {arch} failed:\n{log}")]
    Compile {
        module: String,
        arch: String,
        log: String,
    },
    #[error("module `{module}`: {call} failed: {message}")]
    Call {
        module: String,
        call: &'static str,
        message: String,
    },
}

/// Whether the NVRTC library can be loaded (by the names cudarc tries, e.g. libnvrtc.so.12).
pub fn available() -> bool {
    // SAFETY: only tries to dlopen the library by its usual names.
    unsafe { sys::is_culib_present() }
}

/// The NVRTC version (major, minor), when the library loads.
pub fn version() -> Option<(i32, i32)> {
    if !available() {
        return None;
    }
    let (mut major, mut minor) = (0i32, 0i32);
    // SAFETY: the library is loaded (checked above); the pointers are to live i32s.
    let rc = unsafe { sys::nvrtcVersion(&mut major, &mut minor) };
    (rc == sys::nvrtcResult::NVRTC_SUCCESS).then_some((major, minor))
}

/// The `--gpu-architecture` value for PTX of compute capability `cc` (e.g. (8, 0) →
/// "compute_80"). PTX (not a cubin) so the driver can also JIT it for newer GPUs.
pub fn ptx_arch(cc: (i32, i32)) -> String {
    format!("compute_{}{}", cc.0, cc.1)
}

/// The options every kernel is compiled with (also part of the PTX cache key).
pub const OPTIONS: &[&str] = &["--std=c++17", "-lineinfo"];

fn error_string(rc: sys::nvrtcResult) -> String {
    // SAFETY: the library is loaded (callers checked); nvrtcGetErrorString returns a static
    // NUL-terminated string for every result code.
    let p = unsafe { sys::nvrtcGetErrorString(rc) };
    if p.is_null() {
        format!("{rc:?}")
    } else {
        // SAFETY: non-null, static, NUL-terminated (above).
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }
}

/// Compile `source` (the text of kernels/`module`.cu) to PTX for `arch` (e.g. "compute_80"),
/// with `headers` as (include name, text) pairs.
pub fn compile_ptx(
    module: &str,
    source: &str,
    headers: &[(&str, &str)],
    arch: &str,
) -> Result<String, NvrtcError> {
    if !available() {
        return Err(NvrtcError::Unavailable {
            module: module.to_string(),
        });
    }
    let call_err = |call: &'static str, rc: sys::nvrtcResult| NvrtcError::Call {
        module: module.to_string(),
        call,
        message: error_string(rc),
    };
    let nul = |what: &str| NvrtcError::Call {
        module: module.to_string(),
        call: "nvrtcCreateProgram",
        message: format!("{what} contains a NUL byte"),
    };
    let src = CString::new(source).map_err(|_| nul("the source"))?;
    let name = CString::new(format!("{module}.cu")).map_err(|_| nul("the module name"))?;
    let header_texts = headers
        .iter()
        .map(|(_, t)| CString::new(*t))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| nul("a header"))?;
    let header_names = headers
        .iter()
        .map(|(n, _)| CString::new(*n))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| nul("a header name"))?;
    let text_ptrs: Vec<*const c_char> = header_texts.iter().map(|c| c.as_ptr()).collect();
    let name_ptrs: Vec<*const c_char> = header_names.iter().map(|c| c.as_ptr()).collect();
    let mut opts: Vec<CString> = OPTIONS
        .iter()
        .map(|o| CString::new(*o).expect("static option"))
        .collect();
    opts.push(CString::new(format!("--gpu-architecture={arch}")).map_err(|_| nul("arch"))?);
    let opt_ptrs: Vec<*const c_char> = opts.iter().map(|c| c.as_ptr()).collect();

    let mut prog: sys::nvrtcProgram = std::ptr::null_mut();
    // SAFETY: the library is loaded; every pointer is to a live NUL-terminated string, the two
    // header arrays have `headers.len()` entries each and outlive the call.
    let rc = unsafe {
        sys::nvrtcCreateProgram(
            &mut prog,
            src.as_ptr(),
            name.as_ptr(),
            headers.len() as i32,
            text_ptrs.as_ptr(),
            name_ptrs.as_ptr(),
        )
    };
    if rc != sys::nvrtcResult::NVRTC_SUCCESS {
        return Err(call_err("nvrtcCreateProgram", rc));
    }
    let result = (|| {
        // SAFETY: `prog` was created above; the option array holds live C strings.
        let rc =
            unsafe { sys::nvrtcCompileProgram(prog, opt_ptrs.len() as i32, opt_ptrs.as_ptr()) };
        if rc == sys::nvrtcResult::NVRTC_ERROR_COMPILATION {
            return Err(NvrtcError::Compile {
                module: module.to_string(),
                arch: arch.to_string(),
                log: program_log(prog),
            });
        }
        if rc != sys::nvrtcResult::NVRTC_SUCCESS {
            let mut e = call_err("nvrtcCompileProgram", rc);
            if let NvrtcError::Call { message, .. } = &mut e {
                let opts: Vec<_> = opts.iter().map(|o| o.to_string_lossy()).collect();
                message.push_str(&format!(" (options: {})", opts.join(" ")));
            }
            return Err(e);
        }
        let mut size = 0usize;
        // SAFETY: `prog` compiled successfully; `size` is a live usize.
        let rc = unsafe { sys::nvrtcGetPTXSize(prog, &mut size) };
        if rc != sys::nvrtcResult::NVRTC_SUCCESS {
            return Err(call_err("nvrtcGetPTXSize", rc));
        }
        let mut buf = vec![0u8; size.max(1)];
        // SAFETY: `buf` holds the `size` bytes (including the NUL) NVRTC said it would write.
        let rc = unsafe { sys::nvrtcGetPTX(prog, buf.as_mut_ptr().cast()) };
        if rc != sys::nvrtcResult::NVRTC_SUCCESS {
            return Err(call_err("nvrtcGetPTX", rc));
        }
        let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
        buf.truncate(end);
        String::from_utf8(buf).map_err(|_| NvrtcError::Call {
            module: module.to_string(),
            call: "nvrtcGetPTX",
            message: "PTX is not UTF-8".into(),
        })
    })();
    // SAFETY: `prog` was created above and is destroyed exactly once.
    unsafe { sys::nvrtcDestroyProgram(&mut prog) };
    result
}

fn program_log(prog: sys::nvrtcProgram) -> String {
    let mut size = 0usize;
    // SAFETY: `prog` is a live program; `size` is a live usize.
    if unsafe { sys::nvrtcGetProgramLogSize(prog, &mut size) } != sys::nvrtcResult::NVRTC_SUCCESS {
        return "(no log)".into();
    }
    let mut buf = vec![0u8; size.max(1)];
    // SAFETY: `buf` holds the `size` bytes NVRTC said it would write.
    unsafe { sys::nvrtcGetProgramLog(prog, buf.as_mut_ptr().cast()) };
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arch_names_and_missing_library() {
        assert_eq!(ptx_arch((8, 0)), "compute_80");
        assert_eq!(ptx_arch((9, 0)), "compute_90");
        // With or without libnvrtc this must not panic; without it, a typed error.
        match compile_ptx(
            "t",
            "extern \"C\" __global__ void k() {}",
            &[],
            "compute_80",
        ) {
            Ok(ptx) => assert!(ptx.contains(".entry k")),
            Err(NvrtcError::Unavailable { module }) => {
                assert!(!available());
                assert_eq!(module, "t");
            }
            Err(e) => panic!("{e}"),
        }
    }
}
