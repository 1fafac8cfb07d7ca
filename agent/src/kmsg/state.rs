//! Keeps `(boot_id, cursor per source, next incident id, incidents open)` in the state directory so a restarted agent counts no event twice, every incident once, and goes on with the ids it gave.

use std::path::{Path, PathBuf};

use super::incident::OpenIncident;
use crate::limits::MAX_STATE_BYTES;

/// What the agent had counted when it last saved.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CountedUpTo {
    pub boot_id: String,
    /// Kernel log records up to this seq were counted (and are read again after a restart,
    /// since the kernel keeps its log: they are history then, not counted twice).
    pub last_counted_seq: u64,
    /// KFD SMI records numbered up to this were counted. The channel keeps no history: a
    /// restarted agent numbers the records it reads after this one.
    #[serde(default)]
    pub last_smi_cursor: u64,
    /// The id the next incident gets (files of earlier versions: 0, start from 1).
    #[serde(default)]
    pub next_incident_id: u64,
    /// Incidents open when the agent saved, as the tracker held them: a restarted agent takes
    /// them up again, with their ids and their events of every source, and counts each once it
    /// closes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub open: Vec<OpenIncident>,
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

    fn state(open: Vec<OpenIncident>) -> CountedUpTo {
        CountedUpTo {
            boot_id: "5c1e0f4e-8a4b-4c4e-9f3a-2d1b0c9e8f7a".into(),
            last_counted_seq: 42,
            last_smi_cursor: 3,
            next_incident_id: 9,
            open,
        }
    }

    /// An incident as large as one gets: a count for every rule id, the longest process name.
    fn largest_incident(id: u64) -> OpenIncident {
        let classifier = crate::kmsg::Classifier::embedded().unwrap();
        let mut incident = nodectl_model::Incident {
            incident_id: id,
            kind: "mes_hang_reset".into(),
            device: Some("0000:c1:00.0".into()),
            first_seq: Some(u64::MAX),
            last_seq: Some(u64::MAX),
            first_line: None,
            last_line: None,
            first_monotonic_usec: Some(u64::MAX),
            last_monotonic_usec: Some(u64::MAX),
            first_time: Some(jiff::Timestamp::MAX),
            last_time: Some(jiff::Timestamp::MAX),
            event_counts: classifier
                .rules()
                .iter()
                .map(|r| (r.id.clone(), u32::MAX))
                .collect(),
            process: Some("p".repeat(crate::limits::MAX_INCIDENT_PROCESS_BYTES)),
            pid: Some(u32::MAX),
            recovered: Some(false),
            closed: false,
            drill: false,
            sources: nodectl_model::Source::ALL.into(),
        };
        incident
            .event_counts
            .insert("kfd_smi_mes_hang_reset".into(), u32::MAX);
        OpenIncident::new(
            incident,
            nodectl_model::Class::Hang,
            Some(u64::MAX),
            u32::MAX,
        )
    }

    #[test]
    fn saves_and_loads() {
        let dir = tempfile::tempdir().unwrap();
        let file = StateFile::in_dir(dir.path());
        assert_eq!(file.load().unwrap(), None);
        let s = state(vec![largest_incident(8)]);
        file.save(&s).unwrap();
        assert_eq!(file.load().unwrap(), Some(s));
        // A file of an earlier version: no SMI cursor, no incident ids, only open ids.
        std::fs::write(
            file.path(),
            r#"{"boot_id":"b","last_counted_seq":3,"open_incidents":[2]}"#,
        )
        .unwrap();
        let old = file.load().unwrap().unwrap();
        assert_eq!(
            (old.last_counted_seq, old.next_incident_id, old.open.len()),
            (3, 0, 0)
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
        let s = state(
            (0..crate::limits::MAX_OPEN_INCIDENTS_SAVED as u64)
                .map(largest_incident)
                .collect(),
        );
        file.save(&s).unwrap();
        assert_eq!(file.load().unwrap(), Some(s));
    }

    #[test]
    fn a_fifo_or_an_oversized_file_is_refused_without_blocking_and_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let file = StateFile::in_dir(dir.path());
        nix::unistd::mkfifo(file.path(), nix::sys::stat::Mode::S_IRWXU).unwrap();
        let e = file.load().unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        let s = state(Vec::new());
        file.save(&s).unwrap();
        assert_eq!(file.load().unwrap(), Some(s));
        let oversized = usize::try_from(MAX_STATE_BYTES).unwrap() + 1;
        std::fs::write(file.path(), vec![b' '; oversized]).unwrap();
        let e = file.load().unwrap_err();
        assert!(
            e.to_string().contains("more than a saved position takes"),
            "{e}"
        );
    }
}
