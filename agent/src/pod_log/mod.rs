//! The end of a pod container's log, found under the host's `/var/log/pods` from the pod's namespace and name or UID: the agent builds the path itself and opens nothing a client names.
//!
//! Blocking file I/O on local disk; [`reads`] runs it on its own small pool of threads under
//! [`POD_LOG_DEADLINE`](crate::limits::POD_LOG_DEADLINE). Nothing under `/var/log/pods` is
//! trusted: whoever can write there (log shippers often can) could plant a link, a FIFO or a
//! device, so every component is opened without following links and the log must be a regular
//! file.

use std::io::{Read as _, Seek as _, SeekFrom};
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt as _;

use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, open, openat};
use nix::sys::stat::{Mode, SFlag, fstatat};
use nodectl_model::inference::PodLog;

use crate::HostRoot;
use crate::limits::{MAX_POD_LOG_DIR_ENTRIES, MAX_POD_LOG_TAIL_BYTES};

pub mod reads;

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
    #[error(
        "{path} is {kind}, not {expected}: only what the container runtime writes under /var/log/pods is read (directories and log files of their own)"
    )]
    NotPlain {
        path: String,
        kind: &'static str,
        expected: &'static str,
    },
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

/// How a directory entry under `/var/log/pods` is opened: never through a link (the container
/// runtime writes real directories and regular files there, so a link is something planted),
/// never blocking in `open()` (a FIFO opens at once, then fails the regular-file test).
fn no_follow(directory: bool) -> OFlag {
    let base = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK;
    if directory {
        base | OFlag::O_DIRECTORY | OFlag::O_NOCTTY
    } else {
        base | OFlag::O_NOCTTY
    }
}

/// What an entry is, in words, from its own metadata (a link is not followed).
fn kind_of(parent: &OwnedFd, name: &str) -> &'static str {
    match fstatat(parent, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(stat) => kind_name(SFlag::from_bits_truncate(
            stat.st_mode & SFlag::S_IFMT.bits(),
        )),
        Err(_) => "unreadable",
    }
}

fn kind_name(kind: SFlag) -> &'static str {
    match kind {
        SFlag::S_IFLNK => "a symbolic link",
        SFlag::S_IFIFO => "a FIFO",
        SFlag::S_IFCHR => "a character device",
        SFlag::S_IFBLK => "a block device",
        SFlag::S_IFSOCK => "a socket",
        SFlag::S_IFDIR => "a directory",
        SFlag::S_IFREG => "a regular file",
        _ => "of an unknown type",
    }
}

/// Opens the directory `name` of `parent`, refusing a link or anything but a directory.
fn open_dir(parent: &OwnedFd, name: &str, shown: &str) -> Result<OwnedFd, PodLogError> {
    openat(parent, name, no_follow(true), Mode::empty()).map_err(|errno| match errno {
        // O_NOFOLLOW on a link gives ELOOP, O_DIRECTORY on anything else ENOTDIR.
        Errno::ELOOP | Errno::ENOTDIR => PodLogError::NotPlain {
            path: shown.to_owned(),
            kind: kind_of(parent, name),
            expected: "a directory",
        },
        other => PodLogError::Read {
            path: shown.to_owned(),
            reason: other.desc().to_owned(),
        },
    })
}

/// One entry of a directory under `/var/log/pods`, as it is itself (links not followed).
struct Entry {
    name: String,
    /// The entry's own type and modification time.
    kind: SFlag,
    modified_sec: i64,
}

/// Entries of an open directory, sorted by name; names that are not UTF-8 are skipped (the
/// kubelet writes ASCII names).
fn entries(dir: &OwnedFd, shown: &str) -> Result<Vec<Entry>, PodLogError> {
    let read_error = |errno: Errno| PodLogError::Read {
        path: shown.to_owned(),
        reason: errno.desc().to_owned(),
    };
    let mut listing = Dir::from_fd(dir.try_clone().map_err(|e| PodLogError::Read {
        path: shown.to_owned(),
        reason: e.to_string(),
    })?)
    .map_err(read_error)?;
    let mut out = Vec::new();
    for entry in listing.iter().take(MAX_POD_LOG_DIR_ENTRIES) {
        let entry = entry.map_err(read_error)?;
        let Ok(name) = entry.file_name().to_str() else {
            continue;
        };
        if name == "." || name == ".." {
            continue;
        }
        let Ok(stat) = fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) else {
            continue;
        };
        out.push(Entry {
            name: name.to_owned(),
            kind: SFlag::from_bits_truncate(stat.st_mode & SFlag::S_IFMT.bits()),
            modified_sec: stat.st_mtime,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Reads the tail of the pod container's current log file (the highest restart number).
///
/// The pod directory, the container directory and the file are each opened relative to the one
/// before, without following links, so nothing planted under `/var/log/pods` can make this
/// read a file elsewhere on the host.
pub fn tail(root: &HostRoot, query: &PodLogQuery) -> Result<PodLog, PodLogError> {
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
    let base_path = root.var_log_pods();
    let base_shown = root.host_display(&base_path);
    // The directory itself is the host's (a mount or a link the node's owner made); only what
    // lies under it is written by others.
    let base = match open(
        &base_path,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Err(PodLogError::NoPodLogs(wanted)),
        Err(errno) => {
            return Err(PodLogError::Read {
                path: base_shown,
                reason: errno.desc().to_owned(),
            });
        }
    };
    // A pod re-created under the same name leaves the old UID's directory for a while: the newest
    // one is the running pod. Directories only: a link here is refused below if it is the newest.
    let mut dirs: Vec<(Entry, String, String, String)> = entries(&base, &base_shown)?
        .into_iter()
        .filter_map(|entry| {
            let (rest, uid) = entry.name.rsplit_once('_')?;
            let (namespace, pod) = rest.split_once('_')?;
            let matches = if by_uid {
                uid == query.pod_uid
            } else {
                namespace == query.namespace && pod == query.pod
            };
            let (namespace, pod, uid) = (namespace.to_owned(), pod.to_owned(), uid.to_owned());
            matches.then_some((entry, namespace, pod, uid))
        })
        .collect();
    dirs.sort_by_key(|(entry, ..)| entry.modified_sec);
    let Some((pod_entry, namespace, pod, pod_uid)) = dirs.pop() else {
        return Err(PodLogError::NoPodLogs(wanted));
    };
    let pod_shown = format!("{base_shown}/{}", pod_entry.name);
    let pod_dir = open_dir(&base, &pod_entry.name, &pod_shown)?;
    let label = format!("{namespace}/{pod}");
    // Containers are directories; a link is listed so that naming it gets a clear refusal.
    let containers: Vec<String> = entries(&pod_dir, &pod_shown)?
        .into_iter()
        .filter(|e| matches!(e.kind, SFlag::S_IFDIR | SFlag::S_IFLNK))
        .map(|e| e.name)
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
    let container_shown = format!("{pod_shown}/{container}");
    let container_dir = open_dir(&pod_dir, &container, &container_shown)?;
    // `N.log`, N the restart count: the highest is the running container.
    let current = entries(&container_dir, &container_shown)?
        .into_iter()
        .filter_map(|e| Some((e.name.strip_suffix(".log")?.parse::<u64>().ok()?, e.name)))
        .max()
        .map(|(_, name)| name)
        .ok_or_else(|| PodLogError::NoLogFile(format!("{label}/{container}")))?;
    let shown = format!("{container_shown}/{current}");
    let file = openat(
        &container_dir,
        current.as_str(),
        no_follow(false),
        Mode::empty(),
    )
    .map_err(|errno| match errno {
        Errno::ELOOP => PodLogError::NotPlain {
            path: shown.clone(),
            kind: kind_of(&container_dir, &current),
            expected: "a regular file",
        },
        other => PodLogError::Read {
            path: shown.clone(),
            reason: other.desc().to_owned(),
        },
    })?;
    let file = std::fs::File::from(file);
    let metadata = file.metadata().map_err(|e| PodLogError::Read {
        path: shown.clone(),
        reason: e.to_string(),
    })?;
    if !metadata.is_file() {
        return Err(PodLogError::NotPlain {
            path: shown,
            kind: kind_name(SFlag::from_bits_truncate(
                metadata.mode() & SFlag::S_IFMT.bits(),
            )),
            expected: "a regular file",
        });
    }
    // A hard link made under /var/log/pods to a file elsewhere on the same file system is a
    // regular file too; the runtime's logs have one name (rotation renames them).
    if metadata.nlink() > 1 {
        return Err(PodLogError::NotPlain {
            path: shown,
            kind: "a file with other hard links",
            expected: "a log file of its own",
        });
    }
    let (bytes_skipped, tail, modified) = read_tail(file, &metadata, MAX_POD_LOG_TAIL_BYTES)
        .map_err(|e| PodLogError::Read {
            path: shown.clone(),
            reason: e.to_string(),
        })?;
    let tail = redacted_log(tail);
    // A bundle keeps the tail as the pod's log, with its time, so a replay reads it as this did.
    root.keep_read(
        &base_path
            .join(&pod_entry.name)
            .join(&container)
            .join(&current),
        &tail,
        Some(modified),
    );
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

/// A log with credentials removed before it leaves the node: llama.cpp prints the URL it
/// downloads a model from (a pre-signed one carries its signature), and wrappers echo their
/// command lines. Bytes that are not UTF-8 are replaced, as any reader of the text would.
fn redacted_log(tail: Vec<u8>) -> Vec<u8> {
    let text = match String::from_utf8(tail) {
        Ok(text) => text,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    };
    match crate::redact::redact_text(&text) {
        std::borrow::Cow::Borrowed(_) => text.into_bytes(),
        std::borrow::Cow::Owned(redacted) => redacted.into_bytes(),
    }
}

/// The last `max_bytes` of an open regular file, starting after a line end when cut; the bytes
/// skipped; its mtime.
fn read_tail(
    mut file: std::fs::File,
    metadata: &std::fs::Metadata,
    max_bytes: u64,
) -> std::io::Result<(u64, Vec<u8>, jiff::Timestamp)> {
    let modified = metadata
        .modified()
        .ok()
        .and_then(|t| jiff::Timestamp::try_from(t).ok())
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    let len = metadata.len();
    let start = len.saturating_sub(max_bytes);
    file.seek(SeekFrom::Start(start))?;
    let mut bytes = Vec::with_capacity(usize::try_from(len - start).unwrap_or(0));
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
    use std::path::{Path, PathBuf};

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
    fn credentials_in_the_log_do_not_leave_the_node() {
        let (dir, root) = tree();
        let log = dir
            .path()
            .join("var/log/pods/llm_llama-0_0d3c5e1e-5d3f-4a8e-9c39-1c1b6b0a7e11/server/2.log");
        std::fs::write(
            &log,
            b"2026-12-01T14:30:00Z stderr F common_download_file: downloading from https://bucket.s3.amazonaws.com/m.gguf?X-Amz-Signature=0123456789abcdef\n\
             2026-12-01T14:30:01Z stderr F token hf_abcdefghijklmnopqrstuvwxyzABCDEFGH \xff\n",
        )
        .unwrap();
        let text =
            String::from_utf8(tail(&root, &query("llm", "llama-0", "")).unwrap().tail).unwrap();
        assert!(!text.contains("0123456789abcdef"), "{text}");
        assert!(!text.contains("hf_abcdefghijklmnopqrstuvwxyz"), "{text}");
        assert!(text.contains("common_download_file: downloading from https://bucket.s3.amazonaws.com/m.gguf?X-Amz-Signature=<redacted:url-query>"), "{text}");
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
        let file = std::fs::File::open(&path).unwrap();
        let metadata = file.metadata().unwrap();
        let (skipped, bytes, _) = read_tail(file, &metadata, 8).unwrap();
        assert_eq!(bytes, b"cccc\n");
        assert_eq!(skipped, 10);
    }

    /// A secret outside `/var/log/pods` that planted links point at.
    fn secret_beside(dir: &Path) -> PathBuf {
        let secret = dir.join("etc/shadow");
        std::fs::create_dir_all(secret.parent().unwrap()).unwrap();
        std::fs::write(&secret, "root:$6$secret-hash:19000::::::\n").unwrap();
        secret
    }

    fn refused_as(root: &HostRoot, q: &PodLogQuery, kind: &str, path_end: &str) {
        let e = tail(root, q).unwrap_err();
        let text = e.to_string();
        assert!(matches!(e, PodLogError::NotPlain { .. }), "{text}");
        assert!(text.contains(kind), "{text}");
        assert!(text.contains(path_end), "{text}");
        assert!(!text.contains("secret-hash"), "{text}");
    }

    #[test]
    fn links_at_the_file_the_container_or_the_pod_are_refused() {
        let (dir, root) = tree();
        let secret = secret_beside(dir.path());
        let pods = dir.path().join("var/log/pods");
        let uid = "2d3c5e1e-5d3f-4a8e-9c39-1c1b6b0a7e11";
        // Absolute and relative links as the log file.
        let c = pods.join(format!("llm_abs_{uid}/server"));
        std::fs::create_dir_all(&c).unwrap();
        std::os::unix::fs::symlink(&secret, c.join("0.log")).unwrap();
        refused_as(
            &root,
            &query("llm", "abs", ""),
            "symbolic link",
            "server/0.log",
        );
        let c = pods.join(format!("llm_rel_{uid}/server"));
        std::fs::create_dir_all(&c).unwrap();
        std::os::unix::fs::symlink("../../../../../etc/shadow", c.join("0.log")).unwrap();
        refused_as(
            &root,
            &query("llm", "rel", ""),
            "symbolic link",
            "server/0.log",
        );
        // A linked container directory, named or the only one.
        let p = pods.join(format!("llm_cdir_{uid}"));
        std::fs::create_dir_all(&p).unwrap();
        std::fs::create_dir_all(dir.path().join("etc/fake")).unwrap();
        std::fs::write(dir.path().join("etc/fake/0.log"), "secret-hash\n").unwrap();
        std::os::unix::fs::symlink(dir.path().join("etc/fake"), p.join("server")).unwrap();
        refused_as(
            &root,
            &query("llm", "cdir", ""),
            "symbolic link",
            "cdir_2d3c5e1e-5d3f-4a8e-9c39-1c1b6b0a7e11/server",
        );
        refused_as(
            &root,
            &query("llm", "cdir", "server"),
            "symbolic link",
            "/server",
        );
        // A linked pod directory.
        std::fs::create_dir_all(dir.path().join("etc/fakepod/server")).unwrap();
        std::fs::write(dir.path().join("etc/fakepod/server/0.log"), "secret-hash\n").unwrap();
        std::os::unix::fs::symlink(
            dir.path().join("etc/fakepod"),
            pods.join(format!("llm_pdir_{uid}")),
        )
        .unwrap();
        refused_as(
            &root,
            &query("llm", "pdir", ""),
            "symbolic link",
            "llm_pdir_",
        );
    }

    #[test]
    fn a_fifo_a_hard_link_or_a_directory_as_the_log_is_refused_at_once() {
        let (dir, root) = tree();
        let pods = dir.path().join("var/log/pods");
        let c = pods.join("llm_fifo_3d3c5e1e-5d3f-4a8e-9c39-1c1b6b0a7e11/server");
        std::fs::create_dir_all(&c).unwrap();
        nix::unistd::mkfifo(&c.join("0.log"), Mode::S_IRWXU).unwrap();
        // No writer: a blocking open would never return.
        refused_as(&root, &query("llm", "fifo", ""), "a FIFO", "server/0.log");
        // A hard link to a file outside is refused too.
        let c = pods.join("llm_hard_3d3c5e1e-5d3f-4a8e-9c39-1c1b6b0a7e11/server");
        std::fs::create_dir_all(&c).unwrap();
        let secret = secret_beside(dir.path());
        std::fs::hard_link(&secret, c.join("0.log")).unwrap();
        refused_as(
            &root,
            &query("llm", "hard", ""),
            "hard links",
            "server/0.log",
        );
        // A directory named like a log is not one either.
        let c = pods.join("llm_dev_3d3c5e1e-5d3f-4a8e-9c39-1c1b6b0a7e11/server");
        std::fs::create_dir_all(&c).unwrap();
        std::fs::create_dir_all(c.join("0.log")).unwrap();
        refused_as(
            &root,
            &query("llm", "dev", ""),
            "a directory",
            "server/0.log",
        );
    }
}
