//! The one root every host path is read through (`/` on the host, `/host` in the DaemonSet, a fixture tree in tests).

use std::path::{Path, PathBuf};

/// A host's filesystem as seen from this process. No other module builds an absolute host path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRoot {
    root: PathBuf,
}

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
        Self { root: root.into() }
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
