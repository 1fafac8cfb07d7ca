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
//! (a fixture tree) can be replaced rather than rewritten: its directory is watched (inotify), and
//! [`HeldFiles::refresh`], called once per snapshot, drops the regular files when any watched
//! directory gained, lost or renamed an entry. Without a watch the file's link count is checked
//! on every read instead.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::File;
use std::io::{self, ErrorKind};
use std::os::unix::fs::{FileExt as _, MetadataExt as _};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

use crate::limits::MAX_HOST_FILE_BYTES;

/// sysfs attributes are at most a page, so most files take one read.
const CHUNK_BYTES: usize = 4096;

/// At most this many files are held; a root with more reads the rest by path.
const MAX_HELD_FILES: usize = 256;

/// Open files by their path under the root (as bytes: hashing a `Path` walks its components).
#[derive(Debug, Default)]
pub struct HeldFiles {
    files: Mutex<HashMap<OsString, Arc<Held>>>,
    /// Watches the directories of held regular files; created with the first one.
    watch: Mutex<Option<Inotify>>,
}

#[derive(Debug)]
struct Held {
    file: File,
    staleness: Staleness,
}

/// How a held file is known to be current.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Staleness {
    /// sysfs or procfs: a removed file fails its read.
    FailsWhenRemoved,
    /// A regular file whose directory is watched: `refresh` drops it.
    DirectoryWatched,
    /// A regular file without a watch: its link count is checked on every read.
    LinkCountChecked,
}

/// Entries appearing, disappearing or being renamed in a directory, or the directory itself going.
fn replacement_events() -> AddWatchFlags {
    AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_DELETE
        | AddWatchFlags::IN_MOVED_FROM
        | AddWatchFlags::IN_MOVED_TO
        | AddWatchFlags::IN_DELETE_SELF
        | AddWatchFlags::IN_MOVE_SELF
        | AddWatchFlags::IN_ONLYDIR
}

impl HeldFiles {
    /// Drops every held file (a new boot or a new set of cards).
    pub fn clear(&self) {
        self.lock().clear();
    }

    /// Takes in what happened in the watched directories since the last call: any entry added,
    /// removed or renamed drops the held regular files, which the next reads open by path again.
    pub fn refresh(&self) {
        let changed = {
            let watch = self.watch_lock();
            let Some(inotify) = watch.as_ref() else {
                return;
            };
            let mut changed = false;
            // Non-blocking: `EAGAIN` once drained. A read error other than that (or a queue
            // overflow, itself an event) also counts as a change: when in doubt, reopen.
            loop {
                match inotify.read_events() {
                    Ok(events) if events.is_empty() => break,
                    Ok(_) => changed = true,
                    Err(nix::errno::Errno::EAGAIN) => break,
                    Err(_) => {
                        changed = true;
                        break;
                    }
                }
            }
            changed
        };
        if changed {
            self.lock()
                .retain(|_, held| held.staleness != Staleness::DirectoryWatched);
        }
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
        let file = open_host_file(path)?;
        let bytes = read_whole(&file)?;
        let staleness = if regenerated_on_read(&file) {
            Staleness::FailsWhenRemoved
        } else if self.watch_directory(path) && file.metadata().is_ok_and(|m| m.nlink() > 0) {
            // Watched from before the link count was looked at: a replacement after the open
            // either shows there or arrives as an event.
            Staleness::DirectoryWatched
        } else {
            Staleness::LinkCountChecked
        };
        let held = Held { file, staleness };
        let mut files = self.lock();
        if files.len() < MAX_HELD_FILES {
            files.insert(path.as_os_str().to_owned(), Arc::new(held));
        }
        Ok(bytes)
    }

    /// Watches the directory of `path`; false when inotify is not available (or the limit of
    /// watches is reached).
    fn watch_directory(&self, path: &Path) -> bool {
        let Some(directory) = path.parent() else {
            return false;
        };
        let mut watch = self.watch_lock();
        if watch.is_none() {
            *watch = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).ok();
        }
        // Watching a directory twice returns its first watch.
        watch
            .as_ref()
            .is_some_and(|inotify| inotify.add_watch(directory, replacement_events()).is_ok())
    }

    fn watch_lock(&self) -> MutexGuard<'_, Option<Inotify>> {
        self.watch
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
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
        if self.staleness == Staleness::LinkCountChecked {
            match self.file.metadata() {
                Ok(metadata) if metadata.nlink() > 0 => {}
                _ => return None,
            }
        }
        Some(read_whole(&self.file))
    }
}

/// Opens a host file for reading without ever waiting on it: `O_NONBLOCK`, so a FIFO standing in
/// for a sysfs path opens at once, and `O_NOCTTY`, so a terminal never becomes the agent's
/// controlling terminal. Kernel attributes are regular files: anything else (a FIFO, a device
/// such as `/dev/zero` behind a link) is refused before it is read.
pub fn open_host_file(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _};
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags((nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_NOCTTY).bits())
        .open(path)?;
    let kind = file.metadata()?.file_type();
    let what = if kind.is_file() {
        return Ok(file);
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_dir() {
        "a directory"
    } else {
        "not a regular file"
    };
    Err(io::Error::other(format!(
        "{what}, not a kernel attribute file; not read"
    )))
}

/// The whole file, read from offset 0 with `pread`: that leaves the shared file position alone,
/// so two snapshots may read one held file at once. Not `read_to_end`: for a `File` that asks
/// `statx` and `lseek` for a size hint first, which tell nothing here (sysfs calls every
/// attribute 4096 bytes long). A file longer than [`MAX_HOST_FILE_BYTES`] is an error, read no
/// further.
pub fn read_whole(file: &File) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    let mut chunk = [0u8; CHUNK_BYTES];
    loop {
        match file.read_at(&mut chunk, bytes.len() as u64) {
            Ok(0) => return Ok(bytes),
            Ok(n) => {
                if bytes.len() + n > MAX_HOST_FILE_BYTES {
                    return Err(io::Error::other(format!(
                        "longer than {MAX_HOST_FILE_BYTES} bytes, which no kernel attribute is (a link to a device, or a huge file?); not read further"
                    )));
                }
                bytes.extend_from_slice(&chunk[..n]);
            }
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

        assert_eq!(
            files.lock()[path.as_os_str()].staleness,
            Staleness::DirectoryWatched
        );

        // Replaced by rename, as an editor or an atomic writer does.
        let fresh = root.path().join("a.new");
        std::fs::write(&fresh, "new").unwrap();
        std::fs::rename(&fresh, &path).unwrap();
        files.refresh();
        assert_eq!(files.read(&path).unwrap(), b"new");

        // What a driver reload does to its sysfs directory.
        std::fs::remove_dir_all(&device).unwrap();
        files.refresh();
        assert_eq!(files.read(&path).unwrap_err().kind(), ErrorKind::NotFound);
        assert!(files.lock().is_empty());
        std::fs::create_dir(&device).unwrap();
        std::fs::write(&path, "again").unwrap();
        assert_eq!(files.read(&path).unwrap(), b"again");
    }

    #[test]
    fn without_a_watch_the_link_count_finds_a_replacement() {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join("a");
        std::fs::write(&path, "old").unwrap();
        let file = File::open(&path).unwrap();
        let files = HeldFiles::default();
        files.lock().insert(
            path.as_os_str().to_owned(),
            Arc::new(Held {
                file,
                staleness: Staleness::LinkCountChecked,
            }),
        );
        assert_eq!(files.read(&path).unwrap(), b"old");
        let fresh = root.path().join("a.new");
        std::fs::write(&fresh, "new").unwrap();
        std::fs::rename(&fresh, &path).unwrap();
        assert_eq!(files.read(&path).unwrap(), b"new");
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
    fn endless_and_huge_files_stop_at_the_bound_and_fifos_never_block() {
        let root = tempfile::tempdir().unwrap();
        let files = HeldFiles::default();
        let endless = root.path().join("endless");
        std::os::unix::fs::symlink("/dev/zero", &endless).unwrap();
        let e = files.read(&endless).unwrap_err();
        assert!(e.to_string().contains("character device"), "{e}");
        let huge = root.path().join("huge");
        std::fs::write(&huge, vec![b'1'; MAX_HOST_FILE_BYTES + 1]).unwrap();
        let e = files.read(&huge).unwrap_err();
        assert!(e.to_string().contains("longer than"), "{e}");
        let exact = root.path().join("exact");
        std::fs::write(&exact, vec![b'1'; MAX_HOST_FILE_BYTES]).unwrap();
        assert_eq!(files.read(&exact).unwrap().len(), MAX_HOST_FILE_BYTES);
        // A FIFO with no writer: refused at once instead of hanging in open().
        let fifo = root.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let e = files.read(&fifo).unwrap_err();
        assert!(e.to_string().contains("FIFO"), "{e}");
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
        assert_eq!(held.staleness, Staleness::FailsWhenRemoved);
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_ne!(files.read(uptime).unwrap(), first, "uptime moved on");
    }
}
