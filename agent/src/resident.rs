//! Gives back the memory only start-up used: freed heap, and the mapped pages of code and constants that serving does not touch again.
//!
//! The agent stays up on every GPU node, so what it keeps resident there is its real cost. At
//! start-up it parses flags, the knowledge catalog, TLS material and a kubeconfig, and compiles
//! the kernel-message rules: several MiB of heap that is freed at once, and code that never runs
//! again. glibc keeps freed pages mapped, and a process keeps every page of its binary it once
//! ran (with the 64 KiB the kernel maps around each fault), so without this the agent's resident
//! set would stay at its start-up peak for its whole life. The binary's idle code is also linked
//! together (`agent/idle-code.order`, see `agent/build.rs`), so that what serving touches again
//! is a few hundred pages rather than a few in every 64 KiB of the whole binary.

/// Hands the heap freed so far back to the operating system.
pub fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(unsafe_code)]
    // SAFETY: malloc_trim takes no pointer and only walks glibc's own allocator state under its
    // locks; it may be called at any time from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// What [`release_start_up_pages`] gave back.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Released {
    /// Read-only file mappings (code, constants) whose pages were unmapped.
    pub mappings: usize,
    /// Their resident bytes just before.
    pub resident_bytes: u64,
}

/// Frees the heap start-up left behind and unmaps the pages of the process's read-only file
/// mappings: the binary's and the shared libraries' code and constants. The page cache keeps
/// them, so a page that is run again is mapped back from memory on its next use, without a
/// read from disk; only pages serving touches count in the agent's resident set from then on.
///
/// A mapping is left alone when it holds a private copy of any page (`Anonymous` above zero in
/// `/proc/self/smaps`): the dynamic loader wrote relocations into those (RELRO), and unmapping
/// would put the file's unrelocated bytes back. Only read-only private mappings are touched, and
/// nothing can write to one, so a mapping without a private copy cannot gain one afterwards.
pub fn release_start_up_pages() -> Released {
    release_freed_memory();
    #[cfg(target_os = "linux")]
    {
        match unmap_read_only_file_pages() {
            Ok(released) => {
                tracing::debug!(
                    mappings = released.mappings,
                    resident_bytes = released.resident_bytes,
                    "unmapped the pages of read-only file mappings"
                );
                released
            }
            Err(error) => {
                // Only memory is at stake: the agent serves the same either way.
                tracing::debug!(%error, "could not unmap start-up pages");
                Released::default()
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    Released::default()
}

#[cfg(target_os = "linux")]
fn unmap_read_only_file_pages() -> Result<Released, procfs::ProcError> {
    use procfs::process::{MMPermissions, MMapPath, Process};

    // Our own smaps: one entry per mapping of this process, a few hundred at most.
    let maps = Process::myself()?.smaps()?;
    let mut released = Released::default();
    for map in &maps {
        let read_only_private = map
            .perms
            .contains(MMPermissions::READ | MMPermissions::PRIVATE)
            && !map.perms.contains(MMPermissions::WRITE);
        let stat = |key: &str| map.extension.map.get(key).copied();
        if !read_only_private
            || !matches!(map.pathname, MMapPath::Path(_))
            || stat("Anonymous") != Some(0)
            || stat("Rss").is_none_or(|rss| rss == 0)
        {
            continue;
        }
        let (start, end) = map.address;
        let (Ok(start), Ok(length)) = (usize::try_from(start), usize::try_from(end - start)) else {
            continue;
        };
        let Some(address) = std::ptr::NonNull::new(std::ptr::with_exposed_provenance_mut::<
            std::ffi::c_void,
        >(start)) else {
            continue;
        };
        #[allow(unsafe_code)]
        // SAFETY: the range is exactly one mapping of this process, read from smaps, and it is
        // file-backed, read-only and holds no private page (checked above). MADV_DONTNEED on
        // such a mapping only drops page-table entries: every later access faults the same
        // bytes back in from the file's page cache, so no value any code can observe changes.
        let advised = unsafe {
            nix::sys::mman::madvise(address, length, nix::sys::mman::MmapAdvise::MADV_DONTNEED)
        };
        if advised.is_ok() {
            released.mappings += 1;
            released.resident_bytes += stat("Rss").unwrap_or(0);
        }
    }
    Ok(released)
}

#[cfg(all(test, target_os = "linux"))]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The sum of a key over this process's mappings that `keep` selects.
    fn resident_of(keep: impl Fn(&procfs::process::MemoryMap) -> bool) -> u64 {
        procfs::process::Process::myself()
            .unwrap()
            .smaps()
            .unwrap()
            .iter()
            .filter(|m| keep(m))
            .map(|m| m.extension.map.get("Rss").copied().unwrap_or(0))
            .sum()
    }

    #[test]
    fn unmaps_code_and_the_process_runs_on_with_the_same_data() {
        use procfs::process::MMPermissions;
        let is_code = |m: &procfs::process::MemoryMap| {
            m.perms.contains(MMPermissions::EXECUTE)
                && matches!(m.pathname, procfs::process::MMapPath::Path(_))
        };
        // Relocated constants (RELRO) are read through after the call: a table of &str built
        // at compile time lives there.
        static NAMES: [&str; 3] = ["amdgpu", "kfd", "ttm"];
        let before = resident_of(is_code);
        assert!(before > 0, "this test binary's code is resident");
        let released = release_start_up_pages();
        assert!(released.mappings > 0, "{released:?}");
        assert!(released.resident_bytes > 0, "{released:?}");
        let after = resident_of(is_code);
        assert!(
            after < before,
            "code resident {before} bytes before, {after} after"
        );
        // Code, relocated pointers and constants still work, and a second call is harmless.
        assert_eq!(NAMES.iter().map(|n| n.len()).sum::<usize>(), 12);
        assert_eq!(format!("{:?}", NAMES), r#"["amdgpu", "kfd", "ttm"]"#);
        release_start_up_pages();
        assert_eq!(NAMES.join("/"), "amdgpu/kfd/ttm");
    }
}
