//! The bundle's files in memory: read from the node's part (up to where it was cut), added to, unpacked for a replay, written as a tar.gz with a MANIFEST, optionally encrypted with age.

use std::io::{Read as _, Write as _};
use std::path::{Component, Path, PathBuf};

use anyhow::Context as _;
use sha2::Digest as _;

/// One file, link or directory of the bundle.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Relative, `/`-separated, without `.` or `..`.
    pub path: String,
    pub kind: EntryKind,
    pub mtime_sec: u64,
}

#[derive(Debug, Clone)]
pub enum EntryKind {
    File(Vec<u8>),
    Link(String),
    Dir,
}

/// The bundle being put together.
#[derive(Debug, Default)]
pub struct Bundle {
    entries: Vec<Entry>,
}

/// Bytes of one entry of the node's part accepted (a recorded file is at most a few MiB).
const MAX_ENTRY_BYTES: u64 = 16 * 1024 * 1024;

/// The entries of a gzip-compressed tar, as many as could be read, and why the rest could not.
pub fn unpack(bytes: &[u8]) -> (Vec<Entry>, Option<String>) {
    let mut out = Vec::new();
    if bytes.is_empty() {
        return (out, None);
    }
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bytes));
    let entries = match archive.entries() {
        Ok(entries) => entries,
        Err(e) => return (out, Some(format!("the node's part could not be read: {e}"))),
    };
    for entry in entries {
        let cut = |e: &dyn std::fmt::Display, n: usize| {
            Some(format!(
                "the node's part ends early, after {n} entries: {e}"
            ))
        };
        let mut entry = match entry {
            Ok(entry) => entry,
            Err(e) => return (out.clone(), cut(&e, out.len())),
        };
        let Some(path) = entry.path().ok().and_then(|p| plain_relative(&p)) else {
            // A path with `..` or a root is not one a bundle has: left out.
            continue;
        };
        let mtime_sec = entry.header().mtime().unwrap_or(0);
        let kind = match entry.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let mut data = Vec::new();
                if let Err(e) = (&mut entry).take(MAX_ENTRY_BYTES).read_to_end(&mut data) {
                    return (out.clone(), cut(&e, out.len()));
                }
                EntryKind::File(data)
            }
            tar::EntryType::Symlink => match entry.link_name() {
                Ok(Some(target)) => EntryKind::Link(target.to_string_lossy().into_owned()),
                _ => continue,
            },
            tar::EntryType::Directory => EntryKind::Dir,
            _ => continue,
        };
        out.push(Entry {
            path,
            kind,
            mtime_sec,
        });
    }
    (out, None)
}

/// A path made only of plain names, as `a/b/c`.
fn plain_relative(path: &Path) -> Option<String> {
    let mut parts = Vec::new();
    for component in path.components() {
        match component {
            Component::Normal(name) => parts.push(name.to_str()?.to_owned()),
            Component::CurDir => {}
            _ => return None,
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// A file name made of letters, digits, `.`, `_` and `-` only.
pub fn safe_name(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let trimmed = cleaned.trim_start_matches('.');
    if trimmed.is_empty() {
        "unnamed".to_owned()
    } else {
        trimmed.to_owned()
    }
}

impl Bundle {
    pub fn push(&mut self, entry: Entry) {
        self.entries.retain(|e| e.path != entry.path);
        self.entries.push(entry);
    }

    /// Files in the bundle.
    pub fn len(&self) -> usize {
        self.entries
            .iter()
            .filter(|e| matches!(e.kind, EntryKind::File(_)))
            .count()
    }

    pub fn add_file(&mut self, path: &str, bytes: Vec<u8>) {
        self.push(Entry {
            path: path.to_owned(),
            kind: EntryKind::File(bytes),
            mtime_sec: now_sec(),
        });
    }

    /// A file's text, when the bundle has it.
    pub fn text(&self, path: &str) -> Option<String> {
        self.entries.iter().find_map(|e| match &e.kind {
            EntryKind::File(bytes) if e.path == path => {
                Some(String::from_utf8_lossy(bytes).into_owned())
            }
            _ => None,
        })
    }

    /// `MANIFEST`: the sha256 of every file, as `sha256sum -c` reads it.
    pub fn add_manifest(&mut self) {
        let mut manifest = String::new();
        for entry in &self.entries {
            if let EntryKind::File(bytes) = &entry.kind {
                let digest = hex::encode(sha2::Sha256::digest(bytes));
                manifest.push_str(&format!("{digest}  {}\n", entry.path));
            }
        }
        self.add_file("MANIFEST", manifest.into_bytes());
    }

    /// Writes `host/` under `dir` for a replay and returns where it is. A link may point only
    /// inside the tree (an absolute target is taken inside it): a bundle from elsewhere must not
    /// make this machine's files part of the diagnosis.
    pub fn materialize_host(&self, dir: &Path) -> anyhow::Result<PathBuf> {
        let host = dir.join("host");
        let mut any = false;
        for entry in &self.entries {
            let Some(rest) = entry.path.strip_prefix("host/") else {
                continue;
            };
            any = true;
            let at = host.join(rest);
            match &entry.kind {
                EntryKind::Dir => {
                    // A link already standing there (to a directory) serves as well.
                    if std::fs::symlink_metadata(&at).is_err() {
                        std::fs::create_dir_all(&at)
                            .with_context(|| format!("unpacking {}", entry.path))?;
                    }
                }
                EntryKind::File(bytes) => {
                    if let Some(parent) = at.parent() {
                        std::fs::create_dir_all(parent)?;
                    }
                    if std::fs::symlink_metadata(&at).is_ok() {
                        continue;
                    }
                    std::fs::write(&at, bytes)
                        .with_context(|| format!("unpacking {}", entry.path))?;
                    let modified =
                        std::time::UNIX_EPOCH + std::time::Duration::from_secs(entry.mtime_sec);
                    let _ = std::fs::File::options()
                        .write(true)
                        .open(&at)
                        .and_then(|f| f.set_modified(modified));
                }
                EntryKind::Link(target) => {
                    let Some(target) = inside(&host, Path::new(rest), Path::new(target)) else {
                        continue;
                    };
                    if let Some(parent) = at.parent() {
                        std::fs::create_dir_all(parent)?;
                    }
                    if std::fs::symlink_metadata(&at).is_err() {
                        std::os::unix::fs::symlink(&target, &at)
                            .with_context(|| format!("unpacking {}", entry.path))?;
                    }
                }
            }
        }
        anyhow::ensure!(any, "the bundle holds no host/ files");
        Ok(host)
    }

    /// The bundle as a gzip-compressed tar.
    pub fn tar_gz(&self) -> anyhow::Result<Vec<u8>> {
        let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
            Vec::new(),
            flate2::Compression::default(),
        ));
        for entry in &self.entries {
            let mut header = tar::Header::new_gnu();
            header.set_mtime(entry.mtime_sec);
            header.set_uid(0);
            header.set_gid(0);
            header.set_size(0);
            match &entry.kind {
                EntryKind::File(bytes) => {
                    header.set_entry_type(tar::EntryType::Regular);
                    header.set_mode(0o644);
                    header.set_size(bytes.len() as u64);
                    builder.append_data(&mut header, &entry.path, bytes.as_slice())?;
                }
                EntryKind::Link(target) => {
                    header.set_entry_type(tar::EntryType::Symlink);
                    header.set_mode(0o777);
                    builder.append_link(&mut header, &entry.path, target)?;
                }
                EntryKind::Dir => {
                    header.set_entry_type(tar::EntryType::Directory);
                    header.set_mode(0o755);
                    builder.append_data(&mut header, &entry.path, std::io::empty())?;
                }
            }
        }
        let gz = builder.into_inner()?;
        Ok(gz.finish()?)
    }
}

/// Where a link at `link` (relative to `root`) pointing at `target` leads, as a path under
/// `root`; `None` when it would leave it.
fn inside(root: &Path, link: &Path, target: &Path) -> Option<PathBuf> {
    let mut at: Vec<&std::ffi::OsStr> = if target.is_absolute() {
        Vec::new()
    } else {
        let parent = link.parent().unwrap_or(Path::new(""));
        parent
            .components()
            .filter_map(|c| match c {
                Component::Normal(name) => Some(name),
                _ => None,
            })
            .collect()
    };
    for component in target.components() {
        match component {
            Component::Normal(name) => at.push(name),
            Component::ParentDir => {
                at.pop()?;
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    Some(
        at.iter()
            .fold(root.to_path_buf(), |path, name| path.join(name)),
    )
}

fn now_sec() -> u64 {
    u64::try_from(jiff::Timestamp::now().as_second()).unwrap_or(0)
}

/// The age recipients of `--encrypt-to`, each checked before anything is read.
pub fn age_recipients(texts: &[String]) -> anyhow::Result<Vec<age::x25519::Recipient>> {
    texts
        .iter()
        .map(|text| {
            text.trim().parse::<age::x25519::Recipient>().map_err(|e| {
                anyhow::anyhow!("--encrypt-to {text}: not an age X25519 recipient (age1…): {e}")
            })
        })
        .collect()
}

/// `bytes` encrypted to every recipient, in age's binary format.
pub fn age_encrypt(
    recipients: Vec<age::x25519::Recipient>,
    bytes: &[u8],
) -> anyhow::Result<Vec<u8>> {
    let encryptor =
        age::Encryptor::with_recipients(recipients.iter().map(|r| r as &dyn age::Recipient))
            .context("--encrypt-to")?;
    let mut out = Vec::new();
    let mut writer = encryptor
        .wrap_output(&mut out)
        .context("encrypting the bundle")?;
    writer.write_all(bytes).context("encrypting the bundle")?;
    writer.finish().context("encrypting the bundle")?;
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn links_stay_inside_the_tree() {
        let root = Path::new("/tmp/r/host");
        assert_eq!(
            inside(
                root,
                Path::new("sys/class/drm/card1"),
                Path::new("../../devices/x")
            ),
            Some(PathBuf::from("/tmp/r/host/sys/devices/x"))
        );
        assert_eq!(
            inside(root, Path::new("sys/a"), Path::new("/etc/shadow")),
            Some(PathBuf::from("/tmp/r/host/etc/shadow"))
        );
        assert_eq!(
            inside(root, Path::new("sys/a"), Path::new("../../../etc")),
            None
        );
    }

    #[test]
    fn paths_leaving_the_bundle_are_refused() {
        assert_eq!(
            plain_relative(Path::new("host/sys/x")),
            Some("host/sys/x".to_owned())
        );
        assert_eq!(plain_relative(Path::new("../x")), None);
        assert_eq!(plain_relative(Path::new("/etc/x")), None);
        assert_eq!(safe_name("../a b"), "_a_b");
    }
}
