//! Graceful interruption of training: SIGINT and SIGTERM set a flag that the training loop
//! polls after each iteration; it then writes a checkpoint and stops with
//! [`crate::error::Error::Interrupted`] (the CLI exits with 128 + the signal number: 130 for
//! SIGINT, 143 for SIGTERM). A second signal while the first is being handled exits at once
//! (checkpoint writes are atomic, so that loses at most the current iteration's work).

use std::sync::atomic::{AtomicI32, Ordering};

/// The first signal received (0: none).
static PENDING: AtomicI32 = AtomicI32::new(0);

pub const SIGINT: i32 = libc::SIGINT;
pub const SIGTERM: i32 = libc::SIGTERM;

extern "C" fn on_signal(sig: libc::c_int) {
    // Only async-signal-safe work here: an atomic swap and, on a second signal, `_exit`.
    if PENDING.swap(sig, Ordering::SeqCst) != 0 {
        // SAFETY: `_exit` is async-signal-safe and takes no pointers.
        unsafe { libc::_exit(128 + sig) };
    }
}

/// Installs the handler for SIGINT and SIGTERM (idempotent).
pub fn install() -> std::io::Result<()> {
    for sig in [SIGINT, SIGTERM] {
        // SAFETY: `sigaction` is given a zero-initialized struct (a valid `sigaction` value:
        // empty mask, no flags) whose handler is an `extern "C" fn(c_int)` that only does
        // async-signal-safe work; the old-action pointer may be null.
        let rc = unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(sig, &action, std::ptr::null_mut())
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The signal received since start, if any.
pub fn pending() -> Option<i32> {
    match PENDING.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

/// Sends `sig` to this process (the test hook `GTADAPT_TEST_RAISE_AT` uses it, so tests go
/// through the real handler at a deterministic iteration).
pub fn raise(sig: i32) {
    // SAFETY: `raise` takes a plain integer and has no memory-safety preconditions.
    unsafe { libc::raise(sig) };
}

/// The conventional name of a signal number.
pub fn name(sig: i32) -> &'static str {
    match sig {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        _ => "a signal",
    }
}
