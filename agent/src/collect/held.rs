//! Keeps the files read on every snapshot open and reads them again from offset 0.
//!
//! Opening `/sys/class/drm/card1/device/pp_dpm_sclk` walks nine path components and two
//! symlinks, allocates a file and frees it on close; a snapshot reads about twenty-five such
//! files, and those walks were most of its time. sysfs, procfs and `/proc/sys` produce a file's
//! content anew for every read at offset 0 (seq_file resets its iterator there; binary and sysctl
//! files call their handler with the offset), which is how procps reads `/proc/meminfo` too.
//!
//! A held file can go stale. A removed sysfs or procfs file fails its next read (`ENODEV`): the
//! file is dropped and read by path, which then says whether it is gone or back. A regular file
//! (a fixture tree) that was replaced rather than rewritten is detected by its link count
//! dropping to zero, and read by path as well.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::File;
use std::io::{self, ErrorKind, Read as _};
use std::os::unix::fs::{FileExt as _, MetadataExt as _};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

/// sysfs attributes are at most a page, so most files take one read.
const CHUNK_BYTES: usize = 4096;

/// At most this many files are held; a root with more reads the rest by path.
const MAX_HELD_FILES: usize = 256;

/// Open files by their path under the root (as bytes: hashing a `Path` walks its components).
#[derive(Debug, Default)]
pub struct HeldFiles {
    files: Mutex<HashMap<OsString, Arc<Held>>>,
}

#[derive(Debug)]
struct Held {
    file: File,
    /// Not sysfs or procfs: could have been replaced on disk, so the link count is checked.
    may_be_replaced: bool,
}

impl HeldFiles {
    /// Drops every held file (a new boot or a new set of cards).
    pub fn clear(&self) {
        self.lock().clear();
    }

    /// The whole content of the file at `path` as of now.
    pub fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let held = self.lock().get(path.as_os_str()).map(Arc::clone);
        if let Some(held) = held {
            match held.read_fresh() {
                Some(Ok(bytes)) => return Ok(bytes),
                // Gone, replaced or failing: the path decides, and a new file is held.
                Some(Err(_)) | None => self.forget(path, &held),
            }
        }
        let mut file = File::open(path)?;
        let bytes = read_to_end(&mut file)?;
        let held = Held {
            may_be_replaced: !regenerated_on_read(&file),
            file,
        };
        let mut files = self.lock();
        if files.len() < MAX_HELD_FILES {
            files.insert(path.as_os_str().to_owned(), Arc::new(held));
        }
        Ok(bytes)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<OsString, Arc<Held>>> {
        // The map holds only open files; a panic elsewhere leaves it consistent.
        self.files
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Drops `path` if it still maps to `stale` (another snapshot may have replaced it already).
    fn forget(&self, path: &Path, stale: &Arc<Held>) {
        let mut files = self.lock();
        if files
            .get(path.as_os_str())
            .is_some_and(|held| Arc::ptr_eq(held, stale))
        {
            files.remove(path.as_os_str());
        }
    }
}

impl Held {
    /// The content read from offset 0; `None` when the file was replaced on disk.
    fn read_fresh(&self) -> Option<io::Result<Vec<u8>>> {
        if self.may_be_replaced {
            match self.file.metadata() {
                Ok(metadata) if metadata.nlink() > 0 => {}
                _ => return None,
            }
        }
        Some(pread_to_end(&self.file))
    }
}

/// Reads until end of file. Not `read_to_end`: for a `File` that asks `statx` and `lseek` for a
/// size hint first, two system calls that tell nothing here (sysfs calls every attribute 4096
/// bytes long).
pub fn read_to_end(file: &mut File) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    let mut chunk = [0u8; CHUNK_BYTES];
    loop {
        match file.read(&mut chunk) {
            Ok(0) => return Ok(bytes),
            Ok(n) => bytes.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Reads from offset 0 to end of file with `pread`, which leaves the shared file position alone,
/// so two snapshots may read one held file at once.
fn pread_to_end(file: &File) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    let mut chunk = [0u8; CHUNK_BYTES];
    loop {
        match file.read_at(&mut chunk, bytes.len() as u64) {
            Ok(0) => return Ok(bytes),
            Ok(n) => bytes.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// True on sysfs and procfs, whose files are produced anew by every read at offset 0.
fn regenerated_on_read(file: &File) -> bool {
    use nix::sys::statfs::{PROC_SUPER_MAGIC, SYSFS_MAGIC, fstatfs};
    fstatfs(file).is_ok_and(|fs| [SYSFS_MAGIC, PROC_SUPER_MAGIC].contains(&fs.filesystem_type()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn a_held_file_shows_what_was_written_since() {
        let root = tempfile::tempdir().unwrap();
        let busy = root.path().join("gpu_busy_percent");
        std::fs::write(&busy, "7\n").unwrap();
        let files = HeldFiles::default();
        assert_eq!(files.read(&busy).unwrap(), b"7\n");
        assert_eq!(files.lock().len(), 1);
        std::fs::write(&busy, "93\n").unwrap();
        assert_eq!(files.read(&busy).unwrap(), b"93\n");
        std::fs::write(&busy, "100\n").unwrap();
        assert_eq!(files.read(&busy).unwrap(), b"100\n");
    }

    #[test]
    fn missing_files_are_not_held() {
        let root = tempfile::tempdir().unwrap();
        let files = HeldFiles::default();
        let missing = files.read(&root.path().join("mem_busy_percent"));
        assert_eq!(missing.unwrap_err().kind(), ErrorKind::NotFound);
        assert!(files.lock().is_empty());
    }

    #[test]
    fn a_replaced_or_removed_file_is_read_by_path() {
        let root = tempfile::tempdir().unwrap();
        let device = root.path().join("device");
        std::fs::create_dir(&device).unwrap();
        let path = device.join("a");
        std::fs::write(&path, "old").unwrap();
        let files = HeldFiles::default();
        assert_eq!(files.read(&path).unwrap(), b"old");

        // Replaced by rename, as an editor or an atomic writer does.
        let fresh = root.path().join("a.new");
        std::fs::write(&fresh, "new").unwrap();
        std::fs::rename(&fresh, &path).unwrap();
        assert_eq!(files.read(&path).unwrap(), b"new");

        // What a driver reload does to its sysfs directory.
        std::fs::remove_dir_all(&device).unwrap();
        assert_eq!(files.read(&path).unwrap_err().kind(), ErrorKind::NotFound);
        assert!(files.lock().is_empty());
        std::fs::create_dir(&device).unwrap();
        std::fs::write(&path, "again").unwrap();
        assert_eq!(files.read(&path).unwrap(), b"again");
    }

    #[test]
    fn files_longer_than_a_page_are_read_whole() {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join("long");
        let long = vec![b'x'; CHUNK_BYTES * 3 + 5];
        std::fs::write(&path, &long).unwrap();
        let files = HeldFiles::default();
        assert_eq!(files.read(&path).unwrap(), long);
        assert_eq!(files.read(&path).unwrap(), long);
    }

    #[test]
    fn procfs_files_are_read_anew_without_a_link_check() {
        let files = HeldFiles::default();
        let uptime = Path::new("/proc/uptime");
        let first = files.read(uptime).unwrap();
        let held = files
            .lock()
            .get(uptime.as_os_str())
            .map(Arc::clone)
            .unwrap();
        assert!(!held.may_be_replaced);
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_ne!(files.read(uptime).unwrap(), first, "uptime moved on");
    }
}
