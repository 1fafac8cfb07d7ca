//! Collectors: one module per family of host files, each a pure parser plus a thin reader.
//!
//! Every read goes through [`Reader`], which turns a missing file into `None` ("not supported
//! here") and any other failure into a `problems` entry, so one bad file never loses the rest;
//! its reads run on the [`read_pool`], so one that blocks (a hung SMU) costs a deadline, once.

pub(crate) mod cards;
pub(crate) mod clocks;
pub(crate) mod firmware;
pub mod gpu_metrics;
pub(crate) mod held;
pub(crate) mod host;
pub(crate) mod hwmon;
pub(crate) mod kfd;
pub(crate) mod memory;
pub(crate) mod params;
pub mod processes;
pub(crate) mod read_pool;

use std::collections::HashSet;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::HostRoot;
use nodectl_model::snapshot::Problem;

/// Reads host files under one root and records what went wrong.
#[derive(Debug)]
pub struct Reader<'a> {
    pub root: &'a HostRoot,
    pub problems: Vec<Problem>,
    held: Option<&'a Arc<held::HeldFiles>>,
    read_before: Option<&'a DeviceFilesReadBefore>,
    /// GPU device directories being read: a file under one that is not found while the
    /// directory itself is gone went away mid-read (a reset unbinds the card), which is a
    /// problem, unlike a file this kernel does not have.
    devices: Vec<PathBuf>,
}

impl<'a> Reader<'a> {
    pub fn new(root: &'a HostRoot) -> Self {
        Self {
            root,
            problems: Vec::new(),
            held: None,
            read_before: None,
            devices: Vec::new(),
        }
    }

    /// Reads under `device` from now on are checked for the device going away (see `devices`).
    pub fn watch_device(&mut self, device: &Path) {
        if !self.devices.iter().any(|d| d == device) {
            self.devices.push(device.to_owned());
        }
    }

    /// The watched device `path` lies under.
    fn device_of(&self, path: &Path) -> Option<&PathBuf> {
        self.devices.iter().find(|device| path.starts_with(device))
    }

    /// `path` was read: remembered when it lies under a watched device.
    fn found(&mut self, path: &Path) {
        if let Some(read_before) = self.read_before
            && self.device_of(path).is_some()
        {
            read_before.remember(path);
        }
    }

    /// `path` was not found: a problem when it lies under a watched device that is gone, or that
    /// was read there before (the card went away and may be back already when we look).
    fn not_found(&mut self, path: &Path) {
        let read_before = self.read_before.is_some_and(|r| r.contains(path));
        let gone = self
            .device_of(path)
            .filter(|device| read_before || self.root.metadata(device).is_err())
            .cloned();
        if let Some(device) = gone {
            self.problem(
                &device,
                "the GPU's device directory went away while it was read (a reset or an unbind): this card's values are partial",
            );
        }
    }

    /// A reader that keeps the files it reads open in `held` (for files read again and again)
    /// and remembers in `read_before` which device files it found.
    pub fn holding(
        root: &'a HostRoot,
        held: &'a Arc<held::HeldFiles>,
        read_before: &'a DeviceFilesReadBefore,
    ) -> Self {
        Self {
            held: Some(held),
            read_before: Some(read_before),
            ..Self::new(root)
        }
    }

    /// Records a problem about a file under the root (shown as the host names it), once: two
    /// collectors reading the same file (a card's `uevent`) report it one time.
    pub fn problem(&mut self, path: &Path, reason: impl Into<String>) {
        let problem = Problem {
            path: self.root.host_display(path),
            reason: reason.into(),
        };
        if !self.problems.contains(&problem) {
            self.problems.push(problem);
        }
    }

    /// The bytes of a file; `None` when it does not exist (or an error was recorded).
    pub fn bytes(&mut self, path: &Path) -> Option<Vec<u8>> {
        let owned = path.to_owned();
        let root = self.root.clone();
        let read = match self.held {
            Some(held) => {
                let held = Arc::clone(held);
                read_pool::shared().read(path, move || root.read_held(&held, &owned))
            }
            None => read_pool::shared().read(path, move || root.read_file(&owned)),
        };
        match read {
            Ok(bytes) => {
                self.found(path);
                Some(bytes)
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {
                self.not_found(path);
                None
            }
            Err(e) if e.kind() == ErrorKind::TimedOut => {
                // The read goes on in its thread; the recording learns of it here.
                self.root.note_unanswered(path, &e.to_string());
                self.problem(path, e.to_string());
                None
            }
            Err(e) => {
                self.problem(path, format!("cannot read: {e}"));
                None
            }
        }
    }

    /// The text of a file; not UTF-8 is a problem.
    pub fn text(&mut self, path: &Path) -> Option<String> {
        let bytes = self.bytes(path)?;
        match String::from_utf8(bytes) {
            Ok(text) => Some(text),
            Err(_) => {
                self.problem(path, "not UTF-8 text");
                None
            }
        }
    }

    /// The first line of a file, trimmed; an empty file is absent.
    pub fn line(&mut self, path: &Path) -> Option<String> {
        let text = self.text(path)?;
        let line = text.lines().next().unwrap_or("").trim();
        (!line.is_empty()).then(|| line.to_owned())
    }

    /// A file parsed by `parse`; a parse error is a problem naming the file.
    pub fn parsed<T, E: std::fmt::Display>(
        &mut self,
        path: &Path,
        parse: impl FnOnce(&str) -> Result<T, E>,
    ) -> Option<T> {
        let text = self.text(path)?;
        match parse(&text) {
            Ok(value) => Some(value),
            Err(e) => {
                self.problem(path, e.to_string());
                None
            }
        }
    }

    /// Where a symbolic link points (a `/proc/PID/fd/N` handle); `None` when it does not exist.
    pub fn link(&mut self, path: &Path) -> Option<String> {
        let owned = path.to_owned();
        let root = self.root.clone();
        let read = read_pool::shared().read(path, move || {
            root.read_link(&owned)
                .map(|target| std::os::unix::ffi::OsStrExt::as_bytes(target.as_os_str()).to_vec())
        });
        match read {
            Ok(bytes) => {
                self.found(path);
                Some(String::from_utf8_lossy(&bytes).into_owned())
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {
                self.not_found(path);
                None
            }
            Err(e) => {
                self.problem(path, format!("cannot read the link: {e}"));
                None
            }
        }
    }

    /// Entries of a directory, sorted by name; `None` when it does not exist.
    pub fn dir(&mut self, path: &Path) -> Option<Vec<(String, PathBuf)>> {
        let mut out = match self.root.read_dir(path) {
            Ok(entries) => {
                self.found(path);
                entries
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {
                self.not_found(path);
                return None;
            }
            Err(e) => {
                self.problem(path, format!("cannot list: {e}"));
                return None;
            }
        };
        out.sort_by_key(|(name, _)| natural_key(name));
        Some(out)
    }
}

/// The files under GPU device directories found by earlier snapshots. A reset unbinds the card
/// and binds it again within milliseconds, so a file not found mid-read may sit in a directory
/// that is back when the reader looks: having read it before tells it went away, where this
/// kernel merely lacking it does not.
#[derive(Debug, Default)]
pub struct DeviceFilesReadBefore {
    paths: Mutex<HashSet<PathBuf>>,
}

/// A card has some hundred files read; beyond this many (cards come and go across reloads)
/// the oldest knowledge is dropped whole rather than grown without end.
const MAX_DEVICE_FILES_READ_BEFORE: usize = 4096;

impl DeviceFilesReadBefore {
    fn paths(&self) -> std::sync::MutexGuard<'_, HashSet<PathBuf>> {
        // A panic while holding the lock leaves a consistent set; keep using it.
        self.paths
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn remember(&self, path: &Path) {
        let mut paths = self.paths();
        if paths.contains(path) {
            return;
        }
        if paths.len() >= MAX_DEVICE_FILES_READ_BEFORE {
            paths.clear();
        }
        paths.insert(path.to_owned());
    }

    fn contains(&self, path: &Path) -> bool {
        self.paths().contains(path)
    }

    /// Forgets every file: a new boot or a new set of cards.
    pub fn clear(&self) {
        self.paths().clear();
    }
}

/// Sort key that puts `card2` before `card10`.
fn natural_key(name: &str) -> (String, u64, String) {
    let split = name
        .find(|c: char| c.is_ascii_digit())
        .unwrap_or(name.len());
    let (prefix, rest) = name.split_at(split);
    let digits_end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    let number = rest[..digits_end].parse().unwrap_or(0);
    (prefix.to_owned(), number, rest[digits_end..].to_owned())
}

/// Parses one decimal integer (surrounding whitespace allowed).
pub fn parse_number<T: std::str::FromStr>(text: &str) -> Result<T, String> {
    let trimmed = text.trim();
    trimmed
        .parse()
        .map_err(|_| format!("expected a decimal integer, found {:?}", clip(trimmed)))
}

/// At most 40 characters of a value, for messages.
pub fn clip(text: &str) -> String {
    text.chars().take(40).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn numbers_parse_with_whitespace_and_fail_with_the_value() {
        assert_eq!(parse_number::<u32>("4\n"), Ok(4));
        assert_eq!(
            parse_number::<u32>("x\n"),
            Err("expected a decimal integer, found \"x\"".to_owned())
        );
    }

    proptest::proptest! {
        #[test]
        fn number_parser_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            let text = String::from_utf8_lossy(&bytes);
            let _ = parse_number::<u64>(&text);
            let _ = parse_number::<i64>(&text);
            let _ = natural_key(&text);
        }
    }

    #[test]
    fn natural_order() {
        let mut names = vec!["card10", "card2", "card1", "renderD128"];
        names.sort_by_key(|n| natural_key(n));
        assert_eq!(names, ["card1", "card2", "card10", "renderD128"]);
    }

    #[test]
    fn missing_is_none_and_malformed_is_a_problem() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("n"), "abc").unwrap();
        std::fs::write(dir.path().join("bin"), [0xff, 0xfe]).unwrap();
        let root = HostRoot::new(dir.path());
        let mut reader = Reader::new(&root);
        assert_eq!(reader.text(&root.path("missing")), None);
        assert!(reader.problems.is_empty());
        assert_eq!(reader.parsed(&root.path("n"), parse_number::<u32>), None);
        assert_eq!(reader.text(&root.path("bin")), None);
        assert_eq!(reader.problems.len(), 2);
        assert_eq!(reader.problems[0].path, "/n");
    }

    #[test]
    fn a_device_file_read_before_and_missing_now_is_a_problem_even_with_its_card_back() {
        let dir = tempfile::tempdir().unwrap();
        let device = dir.path().join("sys/devices/card");
        std::fs::create_dir_all(&device).unwrap();
        std::fs::write(device.join("gpu_busy_percent"), "3\n").unwrap();
        let root = HostRoot::new(dir.path());
        let held: Arc<held::HeldFiles> = Arc::default();
        let read_before = DeviceFilesReadBefore::default();
        let busy = root.path("/sys/devices/card/gpu_busy_percent");
        let absent = root.path("/sys/devices/card/pp_od_clk_voltage");

        let mut first = Reader::holding(&root, &held, &read_before);
        first.watch_device(&root.path("/sys/devices/card"));
        assert_eq!(first.line(&busy).as_deref(), Some("3"));
        assert_eq!(first.line(&absent), None);
        assert!(first.problems.is_empty(), "{:?}", first.problems);

        // Gone while read, and the directory is there again when the reader looks.
        std::fs::remove_file(device.join("gpu_busy_percent")).unwrap();
        held.refresh();
        let mut second = Reader::holding(&root, &held, &read_before);
        second.watch_device(&root.path("/sys/devices/card"));
        assert_eq!(second.line(&absent), None);
        assert!(
            second.problems.is_empty(),
            "never there: {:?}",
            second.problems
        );
        assert_eq!(second.line(&busy), None);
        assert_eq!(second.problems.len(), 1, "{:?}", second.problems);
        assert_eq!(second.problems[0].path, "/sys/devices/card");
    }
}
