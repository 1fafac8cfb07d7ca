//! The one root every host path is read through (`/` on the host, `/host` in the DaemonSet, a fixture tree in tests).
//!
//! Besides naming paths it is the one interface to the host's filesystem: files read whole with
//! a bound, links, directories, metadata and streams all go through it, so a [`Recording`] laid
//! over it keeps everything a snapshot, the kernel log or a pod log read, and `--safe-mode`
//! refuses debugfs in one place. (Deadlines are the callers': the collectors' read pool, the
//! pod-log pool, the kernel-log reader's own thread.)

pub mod recording;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::collect::held::{self, HeldFiles};
pub use recording::{ReadOutcome, Recorded, Recording};

/// A host's filesystem as seen from this process. No other module builds an absolute host path.
#[derive(Debug, Clone)]
pub struct HostRoot {
    root: PathBuf,
    /// Where what is read is kept (a bug-report bundle being taken).
    recording: Option<Arc<Recording>>,
    /// Plain sysfs/procfs only: debugfs is refused before any system call touches it.
    safe_mode: bool,
}

impl PartialEq for HostRoot {
    fn eq(&self, other: &Self) -> bool {
        self.root == other.root && self.safe_mode == other.safe_mode
    }
}

impl Eq for HostRoot {}

impl Default for HostRoot {
    fn default() -> Self {
        Self::new("/")
    }
}

/// Why a directory given as a host's root cannot be one (the caller names the path).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HostRootError {
    #[error("no such directory")]
    Missing,
    #[error("not a directory")]
    NotADirectory,
    #[error("cannot be read: {0}")]
    Unreadable(String),
    #[error(
        "has none of proc/, sys/ and dev/, so it is not a host's root (give `/`, the directory the host's `/` is mounted at, or a tree with at least one of them)"
    )]
    NotAHost,
}

impl HostRoot {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            recording: None,
            safe_mode: false,
        }
    }

    /// The same root, keeping what is read through it in `recording`.
    pub fn recorded(&self, recording: Arc<Recording>) -> Self {
        Self {
            recording: Some(recording),
            ..self.clone()
        }
    }

    /// The same root, reading no debugfs path (for a GPU whose debugfs reads may hang the SMU).
    pub fn safe_mode(&self) -> Self {
        Self {
            safe_mode: true,
            ..self.clone()
        }
    }

    pub fn is_recording(&self) -> bool {
        self.recording.is_some()
    }

    /// A root that exists, is a directory and holds `proc/`, `sys/` or `dev/`: a tree with only
    /// part of a host (a fixture, an unpacked bundle, a saved `dev/kmsg`) passes, an empty
    /// directory or a typo does not (it would read as a host without any GPU).
    pub fn checked(root: impl Into<PathBuf>) -> Result<Self, HostRootError> {
        let root = Self::new(root);
        match std::fs::metadata(&root.root) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => return Err(HostRootError::NotADirectory),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(HostRootError::Missing);
            }
            Err(e) => return Err(HostRootError::Unreadable(e.to_string())),
        }
        if !["proc", "sys", "dev"]
            .iter()
            .any(|top| root.path(top).is_dir())
        {
            return Err(HostRootError::NotAHost);
        }
        Ok(root)
    }

    /// The directory that stands for the host's `/`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// True when this is the live host (`/`), where process-wide facts (sysinfo) apply.
    pub fn is_live_host(&self) -> bool {
        self.root == Path::new("/")
    }

    /// A host path (`/sys/class/drm`, `sys/class/drm`) under this root.
    pub fn path(&self, host_path: impl AsRef<Path>) -> PathBuf {
        let host_path = host_path.as_ref();
        let relative = host_path.strip_prefix("/").unwrap_or(host_path);
        self.root.join(relative)
    }

    pub fn sys(&self) -> PathBuf {
        self.path("sys")
    }

    pub fn proc(&self) -> PathBuf {
        self.path("proc")
    }

    pub fn dev_kmsg(&self) -> PathBuf {
        self.path("dev/kmsg")
    }

    pub fn var_log_pods(&self) -> PathBuf {
        self.path("var/log/pods")
    }

    pub fn os_release(&self) -> PathBuf {
        self.path("etc/os-release")
    }

    pub fn debugfs(&self) -> PathBuf {
        self.path("sys/kernel/debug")
    }

    /// The path as the host names it, for messages and `problems`: `/host/sys/x` → `/sys/x`.
    pub fn host_display(&self, path: &Path) -> String {
        match path.strip_prefix(&self.root) {
            Ok(rel) => format!("/{}", rel.display()),
            Err(_) => path.display().to_string(),
        }
    }
}

/// Reads. Every one is logged in the recording, when there is one, with its outcome.
impl HostRoot {
    /// The host path of `path` relative to the root (`sys/x`), for the recording.
    fn relative(&self, path: &Path) -> PathBuf {
        path.strip_prefix(&self.root).unwrap_or(path).to_owned()
    }

    /// Refuses `path` in safe mode when it is under debugfs.
    fn admit(&self, path: &Path, kind: &'static str) -> io::Result<()> {
        if self.safe_mode && path.starts_with(self.debugfs()) {
            if let Some(recording) = &self.recording {
                recording.log(
                    self.host_display(path),
                    kind,
                    ReadOutcome::Refused,
                    Some("--safe-mode reads no debugfs".to_owned()),
                );
            }
            return Err(recording::refused("not read: --safe-mode reads no debugfs"));
        }
        Ok(())
    }

    /// Logs a read's outcome; on success keeps what `keep` makes of it.
    fn note<T>(
        &self,
        path: &Path,
        kind: &'static str,
        result: &io::Result<T>,
        keep: impl FnOnce(&Recording, &T) -> bool,
    ) {
        let Some(recording) = &self.recording else {
            return;
        };
        let (outcome, detail) = match result {
            Ok(value) => {
                if keep(recording, value) {
                    (ReadOutcome::Read, None)
                } else {
                    (
                        ReadOutcome::Read,
                        Some("not kept: the recording is full".to_owned()),
                    )
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => (ReadOutcome::Missing, None),
            Err(e) => (ReadOutcome::Failed, Some(e.to_string())),
        };
        recording.log(self.host_display(path), kind, outcome, detail);
    }

    /// Where `path` leads under the root, relative to it, keeping each link met on the way as
    /// a link: what is kept is kept at the place it really is, so links and the files under
    /// them unpack side by side.
    fn resolved(&self, recording: &Recording, path: &Path) -> PathBuf {
        let relative = self.relative(path);
        match recording::resolve_within(&self.root, &relative) {
            Some((resolved, links)) => {
                for (link, target) in links {
                    recording.keep(link, Recorded::Link(target));
                }
                resolved
            }
            None => relative,
        }
    }

    /// Keeps a file's bytes at the path its links lead to, and the links as links.
    fn keep_file(&self, recording: &Recording, path: &Path, bytes: &[u8]) -> bool {
        let at = self.resolved(recording, path);
        recording.keep(at, Recorded::File(bytes.to_vec()))
    }

    /// A host file read whole, refused unless a regular file, at most
    /// [`crate::limits::MAX_HOST_FILE_BYTES`].
    pub fn read_file(&self, path: &Path) -> io::Result<Vec<u8>> {
        self.admit(path, "file")?;
        let read = held::open_host_file(path).and_then(|f| held::read_whole(&f));
        self.note(path, "file", &read, |r, bytes| {
            self.keep_file(r, path, bytes)
        });
        read
    }

    /// As [`Self::read_file`], through files `held` keeps open.
    pub fn read_held(&self, held: &HeldFiles, path: &Path) -> io::Result<Vec<u8>> {
        self.admit(path, "file")?;
        let read = held.read(path);
        self.note(path, "file", &read, |r, bytes| {
            self.keep_file(r, path, bytes)
        });
        read
    }

    /// At most `max_bytes` of a small file; a FIFO standing in for it reads as empty, never
    /// waited on.
    pub fn read_prefix(&self, path: &Path, max_bytes: u64) -> io::Result<Vec<u8>> {
        use std::io::Read as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        self.admit(path, "file")?;
        let read = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags((nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_NOCTTY).bits())
            .open(path)
            .and_then(|file| {
                let mut bytes = Vec::new();
                file.take(max_bytes).read_to_end(&mut bytes)?;
                Ok(bytes)
            });
        self.note(path, "file", &read, |r, bytes| {
            self.keep_file(r, path, bytes)
        });
        read
    }

    /// Where a symbolic link points; kept as a link.
    pub fn read_link(&self, path: &Path) -> io::Result<PathBuf> {
        self.admit(path, "link")?;
        let read = std::fs::read_link(path);
        self.note(path, "link", &read, |r, target| {
            let at = match (path.parent(), path.file_name()) {
                (Some(parent), Some(name)) => self.resolved(r, parent).join(name),
                _ => self.relative(path),
            };
            r.keep(at, Recorded::Link(target.clone()))
        });
        read
    }

    /// A directory's entries (name and path), unsorted; the directory and those of its entries
    /// that are directories are kept, so a listing reads the same from the recording.
    pub fn read_dir(&self, path: &Path) -> io::Result<Vec<(String, PathBuf)>> {
        self.admit(path, "dir")?;
        let read = std::fs::read_dir(path).and_then(|entries| {
            let mut out = Vec::new();
            for entry in entries {
                let entry = entry?;
                if let Some(name) = entry.file_name().to_str() {
                    let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
                    out.push((name.to_owned(), entry.path(), is_dir));
                }
            }
            Ok(out)
        });
        self.note(path, "dir", &read, |r, entries| {
            let here = self.resolved(r, path);
            let mut kept = r.keep(here.clone(), Recorded::Dir);
            for (name, _, is_dir) in entries {
                if *is_dir {
                    kept &= r.keep(here.join(name), Recorded::Dir);
                }
            }
            kept
        });
        read.map(|entries| entries.into_iter().map(|(n, p, _)| (n, p)).collect())
    }

    /// A path's metadata, following links (nothing is kept: the reads that follow keep the files).
    pub fn metadata(&self, path: &Path) -> io::Result<std::fs::Metadata> {
        self.admit(path, "metadata")?;
        std::fs::metadata(path)
    }

    /// Keeps bytes read from a stream (the kernel log, a pod log's tail) at `path`, after what
    /// was kept there before.
    pub fn keep_stream(&self, path: &Path, bytes: &[u8]) {
        if let Some(recording) = &self.recording
            && !recording.append(&self.relative(path), bytes)
        {
            recording.log(
                self.host_display(path),
                "stream",
                ReadOutcome::Read,
                Some("not all kept: the recording is full".to_owned()),
            );
        }
    }

    /// The host's clock now. On this machine's own root, this machine's clock; a saved tree
    /// frozen at a moment ([`Self::frozen_at`]) tells that moment; any other tree, this
    /// machine's clock.
    pub fn now(&self) -> jiff::Timestamp {
        if self.is_live_host() {
            if self.is_recording() {
                // Read for the recording: its replay tells the time of this moment.
                let _ = self.tree_clock();
            }
            return jiff::Timestamp::now();
        }
        self.frozen_at().unwrap_or_else(jiff::Timestamp::now)
    }

    /// The moment a saved tree (a bundle) was taken: its `proc/stat` boot time plus its
    /// `proc/uptime`, when it holds both. A recording keeps both files, so a replay tells the
    /// time the node told, and nothing in it moves on (no CPU time passes in a saved process).
    pub fn frozen_at(&self) -> Option<jiff::Timestamp> {
        if self.is_live_host() {
            return None;
        }
        self.tree_clock()
    }

    fn tree_clock(&self) -> Option<jiff::Timestamp> {
        let text = |host_path: &str| {
            self.read_prefix(&self.path(host_path), crate::limits::MAX_SMALL_FILE_BYTES)
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok())
        };
        let boot = text("proc/stat").and_then(|stat| crate::kmsg::pipeline::parse_btime(&stat));
        let uptime_usec =
            text("proc/uptime").and_then(|uptime| crate::collect::host::parse_uptime(&uptime).ok());
        boot.zip(uptime_usec)
            .and_then(|(boot, usec)| nodectl_model::clock::at_monotonic(boot, usec))
    }

    /// Keeps what a reader of its own read of `path` (a pod log's tail, opened without following
    /// links), with the file's modification time, replacing what was kept there.
    pub fn keep_read(&self, path: &Path, bytes: &[u8], modified: Option<jiff::Timestamp>) {
        let Some(recording) = &self.recording else {
            return;
        };
        let relative = self.relative(path);
        let kept = recording.keep(relative.clone(), Recorded::File(bytes.to_vec()));
        if let Some(modified) = modified {
            recording.set_modified(relative, modified);
        }
        recording.log(
            self.host_display(path),
            "stream",
            ReadOutcome::Read,
            (!kept).then(|| "not kept: the recording is full".to_owned()),
        );
    }

    /// Logs a read that did not answer within its deadline (it may still be blocked).
    pub fn note_unanswered(&self, path: &Path, detail: &str) {
        if let Some(recording) = &self.recording {
            recording.log(
                self.host_display(path),
                "file",
                ReadOutcome::Failed,
                Some(detail.to_owned()),
            );
        }
    }

    /// Logs a stream opened (or not) at `path`.
    pub fn note_stream<T>(&self, path: &Path, opened: &io::Result<T>) {
        self.note(path, "stream", opened, |_, _| true);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn joins_absolute_and_relative_host_paths() {
        let root = HostRoot::new("/host");
        assert_eq!(root.path("/sys/module"), PathBuf::from("/host/sys/module"));
        assert_eq!(
            root.path("proc/cmdline"),
            PathBuf::from("/host/proc/cmdline")
        );
        assert_eq!(root.dev_kmsg(), PathBuf::from("/host/dev/kmsg"));
    }

    #[test]
    fn a_root_must_be_a_directory_with_proc_or_sys() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        assert_eq!(HostRoot::checked(&missing), Err(HostRootError::Missing));
        let file = dir.path().join("file");
        std::fs::write(&file, "").unwrap();
        assert_eq!(HostRoot::checked(&file), Err(HostRootError::NotADirectory));
        let e = HostRoot::checked(dir.path()).unwrap_err();
        assert!(
            e.to_string().contains("none of proc/, sys/ and dev/"),
            "{e}"
        );
        std::fs::create_dir(dir.path().join("sys")).unwrap();
        assert!(HostRoot::checked(dir.path()).is_ok());
        assert!(HostRoot::checked("/").is_ok());
    }

    #[test]
    fn displays_host_paths_without_the_prefix() {
        let root = HostRoot::new("/host");
        assert_eq!(root.host_display(&root.path("/sys/x")), "/sys/x");
        assert_eq!(
            HostRoot::default().host_display(Path::new("/sys/x")),
            "/sys/x"
        );
        assert!(HostRoot::default().is_live_host());
    }
}
