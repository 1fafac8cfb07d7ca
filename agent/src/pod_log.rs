//! The end of a pod container's log, found under the host's `/var/log/pods` from the pod's namespace and name or UID: the agent builds the path itself and opens nothing a client names.
//!
//! Blocking file I/O on local disk; the server runs it on a blocking thread under
//! [`POD_LOG_DEADLINE`](crate::limits::POD_LOG_DEADLINE).

use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::{Path, PathBuf};

use nodectl_model::inference::PodLog;

use crate::HostRoot;
use crate::limits::MAX_POD_LOG_TAIL_BYTES;

/// Which pod (and container) to read.
#[derive(Debug, Clone, Default)]
pub struct PodLogQuery {
    pub namespace: String,
    pub pod: String,
    pub pod_uid: String,
    pub container: String,
}

#[derive(Debug, thiserror::Error)]
pub enum PodLogError {
    #[error("{field} {value:?} is not a Kubernetes name (lower-case letters, digits, '-' and '.')")]
    BadName { field: &'static str, value: String },
    #[error("pod_uid {0:?} is not a pod UID")]
    BadUid(String),
    #[error("name a pod by namespace and name, or by pod_uid")]
    NoPod,
    #[error("no log directory for pod {0} under /var/log/pods")]
    NoPodLogs(String),
    #[error("pod {pod} has no container {container}; it has: {have}")]
    NoContainer {
        pod: String,
        container: String,
        have: String,
    },
    #[error("pod {pod} has several containers ({have}); name one")]
    WhichContainer { pod: String, have: String },
    #[error("container {0} has no log file yet")]
    NoLogFile(String),
    #[error("reading {path}: {reason}")]
    Read { path: String, reason: String },
}

/// A DNS-1123 name as Kubernetes allows for namespaces, pods and containers; anything else could
/// step outside the directory (`..`, `/`), so it is refused before a path is built.
fn check_name(field: &'static str, value: &str) -> Result<(), PodLogError> {
    let ok = !value.is_empty()
        && value.len() <= 253
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && !value.starts_with('.')
        && !value.contains("..");
    if ok {
        Ok(())
    } else {
        Err(PodLogError::BadName {
            field,
            value: value.to_owned(),
        })
    }
}

fn check_uid(uid: &str) -> Result<(), PodLogError> {
    let ok = uid.len() == 36 && uid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(PodLogError::BadUid(uid.to_owned()))
    }
}

/// Entries of a directory (names only), sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    names
}

/// Reads the tail of the pod container's current log file (the highest restart number).
pub fn tail(root: &HostRoot, query: &PodLogQuery) -> Result<PodLog, PodLogError> {
    let base = root.var_log_pods();
    let by_uid = !query.pod_uid.is_empty();
    if by_uid {
        check_uid(&query.pod_uid)?;
    } else if query.namespace.is_empty() || query.pod.is_empty() {
        return Err(PodLogError::NoPod);
    } else {
        check_name("namespace", &query.namespace)?;
        check_name("pod", &query.pod)?;
    }
    if !query.container.is_empty() {
        check_name("container", &query.container)?;
    }
    let wanted = if by_uid {
        query.pod_uid.clone()
    } else {
        format!("{}/{}", query.namespace, query.pod)
    };
    // A pod re-created under the same name leaves the old UID's directory for a while: the newest
    // one is the running pod.
    let mut dirs: Vec<(String, String, String, PathBuf)> = names(&base)
        .into_iter()
        .filter_map(|name| {
            let (rest, uid) = name.rsplit_once('_')?;
            let (namespace, pod) = rest.split_once('_')?;
            let matches = if by_uid {
                uid == query.pod_uid
            } else {
                namespace == query.namespace && pod == query.pod
            };
            matches.then(|| {
                (
                    namespace.to_owned(),
                    pod.to_owned(),
                    uid.to_owned(),
                    base.join(&name),
                )
            })
        })
        .collect();
    dirs.sort_by_key(|(_, _, _, dir)| std::fs::metadata(dir).and_then(|m| m.modified()).ok());
    let Some((namespace, pod, pod_uid, dir)) = dirs.pop() else {
        return Err(PodLogError::NoPodLogs(wanted));
    };
    let label = format!("{namespace}/{pod}");
    let containers: Vec<String> = names(&dir)
        .into_iter()
        .filter(|c| dir.join(c).is_dir())
        .collect();
    let container = if query.container.is_empty() {
        match containers.as_slice() {
            [only] => only.clone(),
            [] => return Err(PodLogError::NoLogFile(label)),
            many => {
                return Err(PodLogError::WhichContainer {
                    pod: label,
                    have: many.join(", "),
                });
            }
        }
    } else if containers.contains(&query.container) {
        query.container.clone()
    } else {
        return Err(PodLogError::NoContainer {
            pod: label,
            container: query.container.clone(),
            have: containers.join(", "),
        });
    };
    let container_dir = dir.join(&container);
    // `N.log`, N the restart count: the highest is the running container.
    let current = names(&container_dir)
        .into_iter()
        .filter_map(|f| Some((f.strip_suffix(".log")?.parse::<u64>().ok()?, f)))
        .max()
        .map(|(_, f)| container_dir.join(f))
        .ok_or_else(|| PodLogError::NoLogFile(format!("{label}/{container}")))?;
    let shown = root.host_display(&current);
    let (bytes_skipped, tail, modified) =
        read_tail(&current, MAX_POD_LOG_TAIL_BYTES).map_err(|e| PodLogError::Read {
            path: shown.clone(),
            reason: e.to_string(),
        })?;
    Ok(PodLog {
        namespace,
        pod,
        pod_uid,
        container,
        path: shown,
        tail,
        bytes_skipped,
        modified_at: Some(modified.to_string()),
    })
}

/// The last `max_bytes` of a file, starting after a line end when cut; the bytes skipped; its mtime.
fn read_tail(path: &Path, max_bytes: u64) -> std::io::Result<(u64, Vec<u8>, jiff::Timestamp)> {
    let mut file = std::fs::File::open(path)?;
    let metadata = file.metadata()?;
    let modified = metadata
        .modified()
        .ok()
        .and_then(|t| jiff::Timestamp::try_from(t).ok())
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    let len = metadata.len();
    let start = len.saturating_sub(max_bytes);
    file.seek(SeekFrom::Start(start))?;
    let mut bytes = Vec::new();
    // The file may grow while it is read: never more than the bound.
    file.take(max_bytes).read_to_end(&mut bytes)?;
    let mut skipped = start;
    if start > 0 {
        let cut = bytes
            .iter()
            .position(|&b| b == b'\n')
            .map_or(bytes.len(), |i| i + 1);
        bytes.drain(..cut);
        skipped += cut as u64;
    }
    Ok((skipped, bytes, modified))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn tree() -> (tempfile::TempDir, HostRoot) {
        let dir = tempfile::tempdir().unwrap();
        let pods = dir.path().join("var/log/pods");
        let c = pods.join("llm_llama-0_0d3c5e1e-5d3f-4a8e-9c39-1c1b6b0a7e11/server");
        std::fs::create_dir_all(&c).unwrap();
        std::fs::write(c.join("0.log"), "old run\n").unwrap();
        std::fs::write(c.join("1.log"), "2026-12-01T14:30:00Z stderr F hello\n").unwrap();
        let two = pods.join("llm_two_1d3c5e1e-5d3f-4a8e-9c39-1c1b6b0a7e11");
        std::fs::create_dir_all(two.join("a")).unwrap();
        std::fs::create_dir_all(two.join("b")).unwrap();
        let root = HostRoot::new(dir.path());
        (dir, root)
    }

    fn query(ns: &str, pod: &str, container: &str) -> PodLogQuery {
        PodLogQuery {
            namespace: ns.into(),
            pod: pod.into(),
            container: container.into(),
            ..Default::default()
        }
    }

    #[test]
    fn the_current_file_of_the_only_container() {
        let (_dir, root) = tree();
        let log = tail(&root, &query("llm", "llama-0", "")).unwrap();
        assert_eq!(log.container, "server");
        assert!(log.path.ends_with("server/1.log"), "{}", log.path);
        assert_eq!(log.tail, b"2026-12-01T14:30:00Z stderr F hello\n");
        let by_uid = tail(
            &root,
            &PodLogQuery {
                pod_uid: "0d3c5e1e-5d3f-4a8e-9c39-1c1b6b0a7e11".into(),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(by_uid.pod, "llama-0");
    }

    #[test]
    fn names_that_could_leave_the_directory_are_refused() {
        let (_dir, root) = tree();
        for (ns, pod, c) in [
            ("..", "x", ""),
            ("llm", "../../etc", ""),
            ("llm", "llama-0", "../x"),
        ] {
            let e = tail(&root, &query(ns, pod, c)).unwrap_err();
            assert!(matches!(e, PodLogError::BadName { .. }), "{e}");
        }
        let e = tail(&root, &query("llm", "two", "")).unwrap_err();
        assert!(e.to_string().contains("a, b"), "{e}");
        let e = tail(&root, &query("llm", "nope", "")).unwrap_err();
        assert!(matches!(e, PodLogError::NoPodLogs(_)), "{e}");
    }

    #[test]
    fn a_long_log_is_cut_at_a_line_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        std::fs::write(&path, "aaaa\nbbbb\ncccc\n").unwrap();
        let (skipped, bytes, _) = read_tail(&path, 8).unwrap();
        assert_eq!(bytes, b"cccc\n");
        assert_eq!(skipped, 10);
    }
}
