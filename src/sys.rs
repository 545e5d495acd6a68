//! The two OS calls keygate makes itself, each best effort: failure costs
//! latency or resident memory, never correctness.

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
