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

impl HostRoot {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
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
