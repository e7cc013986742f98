//! Giving freed memory back to the system after the daemon's memory-hungry moments.
//!
//! Why: glibc keeps freed heap pages mapped (and resident) unless asked, so a daemon whose
//! start-up parses the kernel's BTF (about 6 MiB of it, tens of MiB once parsed) and walks
//! the watched trees, or whose scan of a million paths fills its channels, would keep that
//! peak resident for good. Called after those moments: a sensor's programs are attached, a
//! sensor has started, a scan has ended.

/// Returns the allocator's free pages, in every arena, to the system.
pub fn give_back() {
    // SAFETY: malloc_trim has no preconditions; it only returns free pages.
    #[cfg(target_env = "gnu")]
    unsafe {
        libc::malloc_trim(0);
    }
}
