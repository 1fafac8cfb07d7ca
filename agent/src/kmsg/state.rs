//! Keeps `(boot_id, last counted seq, incidents open)` in the state directory so a restarted agent counts no record twice and every incident once.

use std::path::{Path, PathBuf};

use crate::limits::MAX_STATE_BYTES;

/// What the agent had counted when it last saved.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CountedUpTo {
    pub boot_id: String,
    pub last_counted_seq: u64,
    /// Incidents (by id: the seq of their first record) still open, so not yet counted: a
    /// restarted agent reads their records again and counts each once it closes, although its
    /// records are at or before `last_counted_seq`. Absent in files of earlier versions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub open_incidents: Vec<u64>,
}

/// The state file in `--state-dir DIR`.
#[derive(Debug, Clone)]
pub struct StateFile {
    path: PathBuf,
}

#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct StateError {
    pub path: String,
    pub reason: String,
}

impl StateFile {
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            path: dir.join("kmsg-state.json"),
        }
    }

    #[cfg(test)]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The saved position; `Ok(None)` when none was saved yet.
    pub fn load(&self) -> Result<Option<CountedUpTo>, StateError> {
        let err = |reason: String| StateError {
            path: self.path.display().to_string(),
            reason,
        };
        match std::fs::symlink_metadata(&self.path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(err(e.to_string())),
            // A FIFO here would block the reader thread forever before its first record.
            Ok(meta) if !meta.is_file() => {
                return Err(err(
                    "not a regular file; it is replaced at the next save".to_owned()
                ));
            }
            Ok(meta) if meta.len() > MAX_STATE_BYTES => {
                return Err(err(format!(
                    "{} bytes, more than a saved position takes; it is replaced at the next save",
                    meta.len()
                )));
            }
            Ok(_) => {}
        }
        match std::fs::read_to_string(&self.path) {
            Ok(text) => serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| err(e.to_string())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(err(e.to_string())),
        }
    }

    /// Writes atomically (temporary file + rename): a crash leaves the old or the new state, and
    /// whatever stood at the path (a corrupt file, a FIFO) is replaced.
    pub fn save(&self, state: &CountedUpTo) -> Result<(), StateError> {
        let err = |reason: String| StateError {
            path: self.path.display().to_string(),
            reason,
        };
        let tmp = self.path.with_extension("json.tmp");
        let text = serde_json::to_string(state).map_err(|e| err(e.to_string()))?;
        std::fs::write(&tmp, text).map_err(|e| err(e.to_string()))?;
        std::fs::rename(&tmp, &self.path).map_err(|e| err(e.to_string()))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn saves_and_loads() {
        let dir = tempfile::tempdir().unwrap();
        let file = StateFile::in_dir(dir.path());
        assert_eq!(file.load().unwrap(), None);
        let s = CountedUpTo {
            boot_id: "b".into(),
            last_counted_seq: 42,
            open_incidents: vec![40],
        };
        file.save(&s).unwrap();
        assert_eq!(file.load().unwrap(), Some(s));
        // A file of an earlier version, without open incidents.
        std::fs::write(file.path(), r#"{"boot_id":"b","last_counted_seq":3}"#).unwrap();
        assert_eq!(
            file.load().unwrap().unwrap().open_incidents,
            Vec::<u64>::new()
        );
        std::fs::write(file.path(), "{").unwrap();
        assert!(
            file.load()
                .unwrap_err()
                .to_string()
                .contains("kmsg-state.json")
        );
    }

    #[test]
    fn the_most_open_incidents_saved_fit_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let file = StateFile::in_dir(dir.path());
        let state = CountedUpTo {
            boot_id: "5c1e0f4e-8a4b-4c4e-9f3a-2d1b0c9e8f7a".into(),
            last_counted_seq: u64::MAX,
            open_incidents: vec![u64::MAX; crate::limits::MAX_OPEN_INCIDENTS_SAVED],
        };
        file.save(&state).unwrap();
        assert_eq!(file.load().unwrap(), Some(state));
    }

    #[test]
    fn a_fifo_or_an_oversized_file_is_refused_without_blocking_and_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let file = StateFile::in_dir(dir.path());
        nix::unistd::mkfifo(file.path(), nix::sys::stat::Mode::S_IRWXU).unwrap();
        let e = file.load().unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        let state = CountedUpTo {
            boot_id: "b".into(),
            last_counted_seq: 7,
            open_incidents: Vec::new(),
        };
        file.save(&state).unwrap();
        assert_eq!(file.load().unwrap(), Some(state));
        std::fs::write(file.path(), vec![b' '; 10_000]).unwrap();
        assert!(file.load().is_err());
    }
}
