//! The few OS calls keygate makes itself. The first two are best effort:
//! failure costs latency or resident memory, never correctness.

/// Nice +10 for the calling thread only (Linux applies `setpriority` with a
/// thread id to that thread): reload work yields to the request threads.
#[allow(unsafe_code)]
pub fn lower_thread_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: gettid and setpriority take plain integers and touch no memory
    // of ours; an error return is ignored on purpose.
    unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 10);
    }
}

/// Hands memory freed after a load back to the OS. Parsing a large snapshot
/// peaks at a few times the size of the index it leaves; the allocator keeps
/// that peak resident unless asked to give it back. The binary allocates with
/// mimalloc; glibc is trimmed too for embedders that keep the system allocator.
#[allow(unsafe_code)]
pub fn release_freed_memory() {
    // SAFETY: mi_collect only walks mimalloc's own heaps; with `force` it
    // returns freed pages to the OS.
    unsafe {
        libmimalloc_sys::mi_collect(true);
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Whether standard output can show anything to anyone. Rust's runtime
/// puts `/dev/null` on a closed descriptor 1 before `main`, so a closed
/// stdout and one sent to `/dev/null` look alike: both count as closed.
#[allow(unsafe_code)]
pub fn stdout_is_open() -> bool {
    // SAFETY: fstat writes only into the zeroed struct we hand it.
    let st = unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        if libc::fstat(libc::STDOUT_FILENO, &mut st) != 0 {
            return false;
        }
        st
    };
    let is_char = st.st_mode & libc::S_IFMT == libc::S_IFCHR;
    !(is_char && libc::major(st.st_rdev) == 1 && libc::minor(st.st_rdev) == 3)
}

/// Ignores SIGXFSZ for the process: a write past `ulimit -f` then fails
/// with `EFBIG`, which the snapshot editor reports and cleans up after,
/// instead of the process dying with its temp file left behind.
#[allow(unsafe_code)]
pub fn ignore_file_size_signal() {
    // SAFETY: installing SIG_IGN for one signal has no handler to run.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
}

/// Ignores SIGHUP until a handler takes it: its default action ends the
/// process, and an operator's reload (`systemctl reload`) can come while
/// the gateway is still starting. The reload service's handler replaces
/// this one; readiness waits for it.
#[allow(unsafe_code)]
pub fn ignore_hangup_until_handled() {
    // SAFETY: installing SIG_IGN for one signal has no handler to run.
    unsafe {
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
    }
}

/// Flushes standard output, best effort: called before the process exits.
pub fn flush_stdout() {
    use std::io::Write;
    let _ = std::io::stdout().flush();
}

/// Where to connect to reach a listener: 0.0.0.0 / [::] are reached on loopback.
pub fn reachable(a: std::net::SocketAddr) -> std::net::SocketAddr {
    match a {
        std::net::SocketAddr::V4(v4) if v4.ip().is_unspecified() => {
            std::net::SocketAddr::from(([127, 0, 0, 1], v4.port()))
        }
        std::net::SocketAddr::V6(v6) if v6.ip().is_unspecified() => {
            std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, v6.port()))
        }
        other => other,
    }
}

/// Runs `f` when the process exits through `exit(3)`: `std::process::exit`
/// anywhere, Pingora's included, or a return from `main`. Returns whether
/// it was registered.
#[allow(unsafe_code)]
pub fn at_exit(f: extern "C" fn()) -> bool {
    // SAFETY: atexit only records the function pointer; `f` is a plain
    // `extern "C"` function that runs on the exiting thread.
    unsafe { libc::atexit(f) == 0 }
}

/// Sets the process's file mode creation mask, returning the one before.
/// Process-wide: meant for start-up, before other threads create files.
#[allow(unsafe_code)]
pub fn set_umask(mask: u32) -> u32 {
    // SAFETY: umask takes and returns a plain integer and cannot fail.
    unsafe { libc::umask(mask as libc::mode_t) as u32 }
}

/// Writes `bytes` to stderr with one `write(2)`, touching no thread-local
/// state: for a word at process exit, when `eprintln!` may panic.
#[allow(unsafe_code)]
pub fn write_stderr(bytes: &[u8]) {
    // SAFETY: write reads `bytes.len()` bytes from a live slice.
    let _ = unsafe { libc::write(2, bytes.as_ptr().cast(), bytes.len()) };
}
