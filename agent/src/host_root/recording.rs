//! Keeps what was read through a host root, at the paths it was read from, for a bug-report bundle.
//!
//! A file read through links is kept at the path the links lead to, and each link as a link, so
//! the recording unpacked is a tree that reads as the host did (`sys/class/drm/card1` stays a link
//! into `sys/devices`). Streams (the kernel log) are kept as the file a saved tree holds for them.
//! Every read asked for is logged with its outcome, kept or not, so a bundle can show what was
//! skipped and a test can check that `--safe-mode` asked for no debugfs path.

use std::collections::BTreeMap;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;

use crate::limits::{MAX_RECORDED_BYTES, MAX_RECORDED_READS};

/// One thing kept, by its host path (relative, `sys/devices/…/vbios_version`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    File(Vec<u8>),
    /// A symbolic link and its target as read (relative or absolute, as on the host).
    Link(PathBuf),
    Dir,
}

/// How one read went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadOutcome {
    Read,
    Missing,
    Failed,
    /// Refused before any system call (`--safe-mode`).
    Refused,
}

impl ReadOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Missing => "missing",
            Self::Failed => "failed",
            Self::Refused => "refused",
        }
    }
}

/// One read asked of the host root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadLogEntry {
    /// The host path as asked (`/sys/class/drm/card1/device/pp_dpm_sclk`).
    pub path: String,
    /// `file`, `link`, `dir`, `stream`, `metadata`.
    pub kind: &'static str,
    pub outcome: ReadOutcome,
    /// Why it failed, or why its content was not kept.
    pub detail: Option<String>,
}

#[derive(Debug, Default)]
struct State {
    entries: BTreeMap<PathBuf, Recorded>,
    modified: BTreeMap<PathBuf, jiff::Timestamp>,
    bytes: usize,
    reads: Vec<ReadLogEntry>,
    reads_not_logged: u64,
}

/// What a host root read, shared by every reader of one recording root.
#[derive(Debug, Default)]
pub struct Recording {
    state: Mutex<State>,
}

/// The recording taken out for writing.
#[derive(Debug, Default)]
pub struct RecordingContents {
    pub entries: BTreeMap<PathBuf, Recorded>,
    /// Modification times worth keeping (a pod log's: a diagnosis reads it).
    pub modified: BTreeMap<PathBuf, jiff::Timestamp>,
    pub reads: Vec<ReadLogEntry>,
    /// Reads beyond [`MAX_RECORDED_READS`], counted only.
    pub reads_not_logged: u64,
}

impl Recording {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Plain maps: a panic elsewhere leaves them consistent.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Logs one read asked for.
    pub fn log(
        &self,
        path: String,
        kind: &'static str,
        outcome: ReadOutcome,
        detail: Option<String>,
    ) {
        let mut state = self.lock();
        if state.reads.len() < MAX_RECORDED_READS {
            state.reads.push(ReadLogEntry {
                path,
                kind,
                outcome,
                detail,
            });
        } else {
            state.reads_not_logged += 1;
        }
    }

    /// Keeps `entry` at `host_path`; false when the recording is full. A file read again
    /// replaces its earlier content; a directory never replaces a file or a link.
    pub fn keep(&self, host_path: PathBuf, entry: Recorded) -> bool {
        let mut state = self.lock();
        let size = recorded_size(&entry);
        let old = state.entries.get(&host_path).map_or(0, recorded_size);
        if entry == Recorded::Dir && state.entries.contains_key(&host_path) {
            return true;
        }
        if state.bytes - old + size > MAX_RECORDED_BYTES {
            return false;
        }
        state.bytes = state.bytes - old + size;
        state.entries.insert(host_path, entry);
        true
    }

    /// Notes the modification time of a kept file.
    pub fn set_modified(&self, host_path: PathBuf, modified: jiff::Timestamp) {
        self.lock().modified.insert(host_path, modified);
    }

    /// Appends to a recorded stream file (the kernel log); false when the recording is full.
    pub fn append(&self, host_path: &Path, bytes: &[u8]) -> bool {
        let mut state = self.lock();
        if state.bytes + bytes.len() > MAX_RECORDED_BYTES {
            return false;
        }
        state.bytes += bytes.len();
        match state
            .entries
            .entry(host_path.to_owned())
            .or_insert_with(|| Recorded::File(Vec::new()))
        {
            Recorded::File(content) => content.extend_from_slice(bytes),
            other => *other = Recorded::File(bytes.to_vec()),
        }
        true
    }

    /// The files, links and directories kept so far (not the log of reads), leaving room for
    /// as many more.
    pub fn take_entries(&self) -> RecordingContents {
        let mut state = self.lock();
        state.bytes = 0;
        RecordingContents {
            entries: std::mem::take(&mut state.entries),
            modified: std::mem::take(&mut state.modified),
            reads: Vec::new(),
            reads_not_logged: 0,
        }
    }

    /// Everything kept and logged so far, leaving the recording empty.
    pub fn take(&self) -> RecordingContents {
        let mut state = self.lock();
        let state = std::mem::take(&mut *state);
        RecordingContents {
            entries: state.entries,
            modified: state.modified,
            reads: state.reads,
            reads_not_logged: state.reads_not_logged,
        }
    }
}

fn recorded_size(entry: &Recorded) -> usize {
    match entry {
        Recorded::File(bytes) => bytes.len(),
        Recorded::Link(target) => target.as_os_str().len(),
        Recorded::Dir => 0,
    }
}

/// Links followed while resolving one path before giving up (the kernel's own limit).
const MAX_LINKS_FOLLOWED: usize = 40;

/// Resolves `host_path` (relative to `root`) component by component as the kernel would, and
/// returns where it leads, relative to the root, with each link met on the way (its path and
/// target). An absolute target is taken inside the root; `..` stops at the root. `None` when a
/// component cannot be looked at or the links loop.
pub fn resolve_within(root: &Path, host_path: &Path) -> Option<(PathBuf, Vec<(PathBuf, PathBuf)>)> {
    let mut links = Vec::new();
    let mut resolved = PathBuf::new();
    // Components still to walk, last first.
    let mut rest: Vec<std::ffi::OsString> = Vec::new();
    push_components(&mut rest, host_path);
    let mut followed = 0;
    while let Some(name) = rest.pop() {
        if name == ".." {
            resolved.pop();
            continue;
        }
        let candidate = resolved.join(&name);
        let metadata = std::fs::symlink_metadata(root.join(&candidate)).ok();
        match metadata {
            Some(m) if m.file_type().is_symlink() => {
                followed += 1;
                if followed > MAX_LINKS_FOLLOWED {
                    return None;
                }
                let target = std::fs::read_link(root.join(&candidate)).ok()?;
                links.push((candidate, target.clone()));
                if target.is_absolute() {
                    resolved = PathBuf::new();
                }
                push_components(&mut rest, &target);
            }
            // A missing last component is still where the path leads.
            _ => resolved = candidate,
        }
    }
    Some((resolved, links))
}

/// Pushes the normal and `..` components of `path` onto `rest` so they pop in order.
fn push_components(rest: &mut Vec<std::ffi::OsString>, path: &Path) {
    let names: Vec<std::ffi::OsString> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(name) => Some(name.to_owned()),
            Component::ParentDir => Some("..".into()),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
        })
        .collect();
    rest.extend(names.into_iter().rev());
}

/// The error a refused read gives.
pub fn refused(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::PermissionDenied, what.to_owned())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn links_are_followed_inside_the_root_and_listed() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("sys/devices/pci/0000:c5:00.0/drm/card1")).unwrap();
        std::fs::create_dir_all(root.join("sys/class/drm")).unwrap();
        std::os::unix::fs::symlink(
            "../../devices/pci/0000:c5:00.0/drm/card1",
            root.join("sys/class/drm/card1"),
        )
        .unwrap();
        std::os::unix::fs::symlink(
            "../../../0000:c5:00.0",
            root.join("sys/devices/pci/0000:c5:00.0/drm/card1/device"),
        )
        .unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.join("sys/abs")).unwrap();
        let (resolved, links) =
            resolve_within(root, Path::new("sys/class/drm/card1/device/vbios_version")).unwrap();
        assert_eq!(
            resolved,
            Path::new("sys/devices/pci/0000:c5:00.0/vbios_version")
        );
        assert_eq!(links.len(), 2);
        assert_eq!(links[0].0, Path::new("sys/class/drm/card1"));
        let (resolved, _) = resolve_within(root, Path::new("/sys/abs")).unwrap();
        assert_eq!(resolved, Path::new("etc/passwd"));
        std::os::unix::fs::symlink("loop", root.join("sys/loop")).unwrap();
        assert_eq!(resolve_within(root, Path::new("sys/loop/x")), None);
    }

    #[test]
    fn the_recording_is_bounded_and_a_dir_never_hides_a_file() {
        let recording = Recording::default();
        assert!(recording.keep("a".into(), Recorded::File(vec![1; 10])));
        assert!(recording.keep("a".into(), Recorded::Dir));
        assert!(!recording.keep(
            "big".into(),
            Recorded::File(vec![0; MAX_RECORDED_BYTES + 1])
        ));
        assert!(recording.append(Path::new("dev/kmsg"), b"6,1,2,-;x\n"));
        assert!(recording.append(Path::new("dev/kmsg"), b"6,2,3,-;y\n"));
        let taken = recording.take();
        assert_eq!(taken.entries[Path::new("a")], Recorded::File(vec![1; 10]));
        assert_eq!(
            taken.entries[Path::new("dev/kmsg")],
            Recorded::File(b"6,1,2,-;x\n6,2,3,-;y\n".to_vec())
        );
    }
}
