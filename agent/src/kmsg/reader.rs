//! Reads `/dev/kmsg` with its real semantics (one record per read, EPIPE on overrun, EAGAIN when drained), or a saved kmsg stream in a tree.
//!
//! The reader works over a [`RecordSource`] so that an overrun can be reproduced in tests by a
//! source that skips sequence numbers; [`KmsgFile`] is the real device, [`SavedKmsg`] a regular
//! file of kmsg records (a bug-report bundle's `dev/kmsg`, a fixture tree).

use std::fs::File;
use std::io::{self, Read as _};
use std::os::fd::AsFd as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;
use std::time::Duration;

use super::record::{Record, parse_record};
use crate::limits::MAX_PLAUSIBLE_GAP;

/// Large enough for any record (the kernel caps a record well below it; a smaller buffer makes
/// `read()` fail with EINVAL).
pub const READ_BUFFER_BYTES: usize = 16 * 1024;

/// Where records come from: `read()` returns one whole record, `BrokenPipe` after an overrun,
/// `WouldBlock` when there is nothing more to read now.
pub trait RecordSource {
    fn read_record(&mut self, buf: &mut [u8]) -> io::Result<usize>;

    /// Waits up to `timeout` for a record to become readable; `Ok(true)` when one is.
    fn wait_readable(&mut self, timeout: Duration) -> io::Result<bool>;

    /// The records' clock now, in monotonic µs: what decides that an incident has gone quiet.
    /// The live device's is this machine's monotonic clock.
    fn now_usec(&self) -> Option<u64> {
        nodectl_model::clock::monotonic_usec_now()
    }
}

/// Opens for reading without waiting and without taking a controlling terminal (`O_NOCTTY`: a
/// tty standing in for the device must not become the agent's).
fn open_nonblocking(path: &Path) -> io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags((nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_NOCTTY).bits())
        .open(path)
}

/// The kernel log of a host root: the device, or a saved stream where a tree holds a file.
#[derive(Debug)]
pub enum KernelLogSource {
    Device(KmsgFile),
    Saved(SavedKmsg),
}

impl KernelLogSource {
    /// Opens `path` by what it is: a regular file or a FIFO carries kmsg records as text (a saved
    /// stream, or one piped in), anything else is the device.
    pub fn open(path: &Path) -> io::Result<Self> {
        let kind = std::fs::metadata(path)?.file_type();
        if kind.is_file() || std::os::unix::fs::FileTypeExt::is_fifo(&kind) {
            Ok(Self::Saved(SavedKmsg::open(path)?))
        } else {
            Ok(Self::Device(KmsgFile::open(path)?))
        }
    }
}

impl RecordSource for KernelLogSource {
    fn read_record(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Device(d) => d.read_record(buf),
            Self::Saved(s) => s.read_record(buf),
        }
    }

    fn wait_readable(&mut self, timeout: Duration) -> io::Result<bool> {
        match self {
            Self::Device(d) => d.wait_readable(timeout),
            Self::Saved(s) => s.wait_readable(timeout),
        }
    }

    fn now_usec(&self) -> Option<u64> {
        match self {
            Self::Device(d) => d.now_usec(),
            Self::Saved(s) => s.now_usec(),
        }
    }
}

/// The kernel log of a host root, opened through the root: what is read is kept in the root's
/// recording, as the saved stream a tree holds at `dev/kmsg`.
#[derive(Debug)]
pub struct RootKmsg {
    source: KernelLogSource,
    /// The root and path to keep records at, when the root records.
    recording: Option<(crate::HostRoot, std::path::PathBuf)>,
}

impl RootKmsg {
    pub fn open(root: &crate::HostRoot) -> io::Result<Self> {
        let path = root.dev_kmsg();
        let opened = KernelLogSource::open(&path);
        root.note_stream(&path, &opened);
        Ok(Self {
            source: opened?,
            recording: root.is_recording().then(|| (root.clone(), path)),
        })
    }
}

impl RecordSource for RootKmsg {
    fn read_record(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.source.read_record(buf)?;
        if let Some((root, path)) = &self.recording
            && let Some(record) = buf.get(..n)
        {
            root.keep_stream(path, record);
            if !record.ends_with(b"\n") {
                root.keep_stream(path, b"\n");
            }
        }
        Ok(n)
    }

    fn wait_readable(&mut self, timeout: Duration) -> io::Result<bool> {
        self.source.wait_readable(timeout)
    }

    fn now_usec(&self) -> Option<u64> {
        self.source.now_usec()
    }
}

/// A regular file (or FIFO) of kmsg records as `/dev/kmsg` prints them (`PRI,SEQ,USEC,FLAGS;text`,
/// each followed by its ` KEY=value` dictionary lines): one record per read, `WouldBlock` at the
/// end. A file that grows is read on, as `tail -f` would; a FIFO whose writer closed is at its
/// end, and neither is ever spun on.
#[derive(Debug)]
pub struct SavedKmsg {
    reader: io::BufReader<File>,
    /// Bytes consumed so far (the file's length beyond it means more to read).
    offset: u64,
    /// The first line of the next record, read while looking for the end of this one.
    next_head: Option<Vec<u8>>,
    /// The line being read.
    partial: Vec<u8>,
}

impl SavedKmsg {
    pub fn open(path: &Path) -> io::Result<Self> {
        Ok(Self {
            reader: io::BufReader::new(open_nonblocking(path)?),
            offset: 0,
            next_head: None,
            partial: Vec::new(),
        })
    }

    /// The next line, at most `READ_BUFFER_BYTES` of it kept. A last line without a newline
    /// counts as a line: a saved file need not end with one.
    fn next_line(&mut self) -> io::Result<Option<Vec<u8>>> {
        use io::BufRead as _;
        loop {
            let available = self.reader.fill_buf()?;
            if available.is_empty() {
                return Ok((!self.partial.is_empty()).then(|| std::mem::take(&mut self.partial)));
            }
            let (taken, done) = match memchr_newline(available) {
                Some(at) => (at + 1, true),
                None => (available.len(), false),
            };
            let room = READ_BUFFER_BYTES.saturating_sub(self.partial.len());
            self.partial
                .extend_from_slice(available.get(..taken.min(room)).unwrap_or_default());
            self.reader.consume(taken);
            self.offset = self.offset.saturating_add(taken as u64);
            if done {
                return Ok(Some(std::mem::take(&mut self.partial)));
            }
        }
    }
}

fn memchr_newline(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|b| *b == b'\n')
}

impl RecordSource for SavedKmsg {
    fn read_record(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let head = loop {
            let line = match self.next_head.take() {
                Some(line) => line,
                None => match self.next_line()? {
                    Some(line) => line,
                    None => return Err(io::ErrorKind::WouldBlock.into()),
                },
            };
            if !line.iter().all(u8::is_ascii_whitespace) {
                break line;
            }
        };
        let mut record = head;
        loop {
            match self.next_line() {
                Ok(Some(line)) if line.first() == Some(&b' ') => record.extend_from_slice(&line),
                Ok(Some(line)) => {
                    self.next_head = Some(line);
                    break;
                }
                // Nothing more yet (a FIFO's writer between writes): the record ends here.
                Ok(None) => break,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        let n = record.len().min(buf.len());
        buf[..n].copy_from_slice(&record[..n]);
        Ok(n)
    }

    fn wait_readable(&mut self, timeout: Duration) -> io::Result<bool> {
        if self.next_head.is_some() || !self.reader.buffer().is_empty() {
            return Ok(true);
        }
        let grown =
            |s: &Self| -> io::Result<bool> { Ok(s.reader.get_ref().metadata()?.len() > s.offset) };
        if grown(self)? {
            return Ok(true);
        }
        // A regular file is always "readable" to poll(); sleep instead of spinning on it.
        std::thread::sleep(timeout);
        grown(self)
    }

    /// A saved stream's clock stopped at its end: an incident quiet at the end of it is over,
    /// as at the end of a saved log read with `events --file`.
    fn now_usec(&self) -> Option<u64> {
        Some(u64::MAX)
    }
}

/// `/dev/kmsg` opened non-blocking.
#[derive(Debug)]
pub struct KmsgFile {
    file: File,
}

impl KmsgFile {
    /// Opens the device at the oldest record still in the ring.
    pub fn open(path: &Path) -> io::Result<Self> {
        Ok(Self {
            file: open_nonblocking(path)?,
        })
    }

    /// Moves after the newest record: only records written from now on are read.
    pub fn seek_end(&mut self) -> io::Result<()> {
        use std::io::Seek as _;
        self.file.seek(io::SeekFrom::End(0)).map(|_| ())
    }
}

impl RecordSource for KmsgFile {
    fn read_record(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.file.read(buf)
    }

    fn wait_readable(&mut self, timeout: Duration) -> io::Result<bool> {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        let millis = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(self.file.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(millis)) {
            Ok(n) => Ok(n > 0),
            Err(nix::errno::Errno::EINTR) => Ok(false),
            Err(e) => Err(io::Error::from(e)),
        }
    }
}

/// Whether `seq` can follow `last` in one boot's log: it is higher, by less than the most records
/// a kernel could have overwritten in between ([`MAX_PLAUSIBLE_GAP`]).
pub fn follows_plausibly(last: u64, seq: u64) -> bool {
    seq > last && seq - last <= MAX_PLAUSIBLE_GAP
}

/// What one step of the reader produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadOutcome {
    Record(Record),
    /// Records `first_seq ..= last_seq` were overwritten before they were read.
    Lost {
        first_seq: u64,
        last_seq: u64,
    },
    /// Bytes that are not a record (kept for the caller to report; reading goes on).
    Malformed {
        reason: String,
    },
    /// The sequence numbers started over (`seq` ≤ the last one, or a jump no kernel could have
    /// made): records of another boot, or a corrupt input. Nothing is counted as lost; the
    /// record that did it comes next.
    Restarted {
        after_seq: u64,
        seq: u64,
    },
    /// Nothing more to read now.
    Drained,
}

impl ReadOutcome {
    /// Number of lost records of a `Lost` outcome.
    pub fn lost_count(&self) -> u64 {
        match self {
            ReadOutcome::Lost {
                first_seq,
                last_seq,
            } => last_seq.saturating_sub(*first_seq) + 1,
            _ => 0,
        }
    }
}

/// Reads records in order and turns sequence gaps into `Lost` outcomes.
pub struct KmsgReader<S> {
    source: S,
    buf: Vec<u8>,
    last_seq: Option<u64>,
    /// Records up to this seq were handled before (`resume_after`): skipped, not a restart.
    resumed_after: Option<u64>,
    /// A record read after a gap, returned on the next call (after the `Lost`).
    pending: Option<Record>,
}

impl<S: RecordSource> KmsgReader<S> {
    pub fn new(source: S) -> Self {
        Self {
            source,
            buf: vec![0; READ_BUFFER_BYTES],
            last_seq: None,
            resumed_after: None,
            pending: None,
        }
    }

    /// Continues after `seq` (records up to it were handled before): a gap after it counts as lost.
    pub fn resume_after(&mut self, seq: u64) {
        self.last_seq = Some(seq);
        self.resumed_after = Some(seq);
    }

    pub fn last_seq(&self) -> Option<u64> {
        self.last_seq
    }

    pub fn source_mut(&mut self) -> &mut S {
        &mut self.source
    }

    /// The next outcome. EPIPE is not an error: the kernel moved our position to the oldest
    /// record, and the seq gap of the next record says how many were lost.
    pub fn next_outcome(&mut self) -> io::Result<ReadOutcome> {
        if let Some(record) = self.pending.take() {
            self.last_seq = Some(record.seq);
            return Ok(ReadOutcome::Record(record));
        }
        loop {
            match self.source.read_record(&mut self.buf) {
                Ok(0) => return Ok(ReadOutcome::Drained),
                Ok(n) => {
                    let bytes = self.buf.get(..n).unwrap_or_default();
                    let record = match parse_record(bytes) {
                        Ok(record) => record,
                        Err(e) => {
                            return Ok(ReadOutcome::Malformed {
                                reason: format!("{e}: {:?}", String::from_utf8_lossy(bytes)),
                            });
                        }
                    };
                    if self.resumed_after.is_some_and(|done| record.seq <= done) {
                        continue;
                    }
                    self.resumed_after = None;
                    match self.last_seq {
                        Some(last) if !follows_plausibly(last, record.seq) => {
                            let restarted = ReadOutcome::Restarted {
                                after_seq: last,
                                seq: record.seq,
                            };
                            self.pending = Some(record);
                            return Ok(restarted);
                        }
                        Some(last) if record.seq > last.saturating_add(1) => {
                            let lost = ReadOutcome::Lost {
                                first_seq: last + 1,
                                last_seq: record.seq - 1,
                            };
                            self.pending = Some(record);
                            return Ok(lost);
                        }
                        _ => {
                            self.last_seq = Some(record.seq);
                            return Ok(ReadOutcome::Record(record));
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Ok(ReadOutcome::Drained);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Waits up to `timeout` for more records.
    pub fn wait(&mut self, timeout: Duration) -> io::Result<bool> {
        if self.pending.is_some() {
            return Ok(true);
        }
        self.source.wait_readable(timeout)
    }
}

/// An in-memory source for tests and replays: records in order, `Err(BrokenPipe)` where an
/// entry is `None` (an overrun), then `WouldBlock`.
#[derive(Debug, Default)]
pub struct ScriptedSource {
    entries: std::collections::VecDeque<Option<Vec<u8>>>,
}

impl ScriptedSource {
    pub fn new(entries: impl IntoIterator<Item = Option<Vec<u8>>>) -> Self {
        Self {
            entries: entries.into_iter().collect(),
        }
    }

    pub fn push(&mut self, entry: Option<Vec<u8>>) {
        self.entries.push_back(entry);
    }
}

impl RecordSource for ScriptedSource {
    fn read_record(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.entries.pop_front() {
            None => Err(io::ErrorKind::WouldBlock.into()),
            Some(None) => Err(io::ErrorKind::BrokenPipe.into()),
            Some(Some(bytes)) => {
                if bytes.len() > buf.len() {
                    return Err(io::ErrorKind::InvalidInput.into());
                }
                buf[..bytes.len()].copy_from_slice(&bytes);
                Ok(bytes.len())
            }
        }
    }

    fn wait_readable(&mut self, _timeout: Duration) -> io::Result<bool> {
        Ok(!self.entries.is_empty())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn rec(seq: u64) -> Option<Vec<u8>> {
        Some(format!("6,{seq},{},-;line {seq}\n", seq * 10).into_bytes())
    }

    fn drain<S: RecordSource>(reader: &mut KmsgReader<S>) -> Vec<ReadOutcome> {
        let mut out = Vec::new();
        loop {
            match reader.next_outcome().unwrap() {
                ReadOutcome::Drained => return out,
                o => out.push(o),
            }
        }
    }

    #[test]
    fn an_overrun_is_counted_exactly_from_the_seq_gap() {
        // 1..=3 read, then the kernel overwrote 4..=9 (EPIPE), then 10, 11.
        let source = ScriptedSource::new([rec(1), rec(2), rec(3), None, rec(10), rec(11)]);
        let mut reader = KmsgReader::new(source);
        let out = drain(&mut reader);
        let lost: u64 = out.iter().map(ReadOutcome::lost_count).sum();
        assert_eq!(lost, 6);
        assert_eq!(
            out[3],
            ReadOutcome::Lost {
                first_seq: 4,
                last_seq: 9
            }
        );
        let seqs: Vec<u64> = out
            .iter()
            .filter_map(|o| match o {
                ReadOutcome::Record(r) => Some(r.seq),
                _ => None,
            })
            .collect();
        assert_eq!(seqs, [1, 2, 3, 10, 11]);
    }

    #[test]
    fn a_gap_without_epipe_and_a_gap_after_resume_count_too() {
        let mut reader = KmsgReader::new(ScriptedSource::new([rec(5), rec(6), rec(9)]));
        reader.resume_after(2);
        let lost: u64 = drain(&mut reader).iter().map(ReadOutcome::lost_count).sum();
        assert_eq!(lost, 2 + 2);
    }

    #[test]
    fn records_already_handled_are_skipped_and_malformed_ones_reported() {
        let mut reader = KmsgReader::new(ScriptedSource::new([
            rec(3),
            rec(4),
            Some(b"garbage".to_vec()),
            rec(5),
        ]));
        reader.resume_after(3);
        let out = drain(&mut reader);
        assert!(matches!(out[0], ReadOutcome::Record(ref r) if r.seq == 4));
        assert!(matches!(out[1], ReadOutcome::Malformed { .. }));
        assert!(matches!(out[2], ReadOutcome::Record(ref r) if r.seq == 5));
    }

    #[test]
    fn a_seq_going_back_or_jumping_past_any_ring_is_a_restart_not_a_loss() {
        let at = |seq: u64| Some(format!("6,{seq},1,-;line {seq}\n").into_bytes());
        let mut reader = KmsgReader::new(ScriptedSource::new([at(5), at(u64::MAX), at(3)]));
        let out = drain(&mut reader);
        let lost: u64 = out.iter().map(ReadOutcome::lost_count).sum();
        assert_eq!(lost, 0);
        let restarts = out
            .iter()
            .filter(|o| matches!(o, ReadOutcome::Restarted { .. }))
            .count();
        assert_eq!(restarts, 2);
        let seqs: Vec<u64> = out
            .iter()
            .filter_map(|o| match o {
                ReadOutcome::Record(r) => Some(r.seq),
                _ => None,
            })
            .collect();
        assert_eq!(seqs, [5, u64::MAX, 3]);
    }

    fn seq_strategy() -> impl proptest::strategy::Strategy<Value = u64> {
        use proptest::prelude::*;
        prop_oneof![
            0u64..40,
            Just(u64::MAX),
            Just(u64::MAX - 1),
            Just(MAX_PLAUSIBLE_GAP),
            Just(MAX_PLAUSIBLE_GAP + 2),
            any::<u64>(),
        ]
    }

    proptest::proptest! {
        /// Overflow checks are on in the test profile: any order of seqs, extremes included,
        /// reads without a panic, every record is delivered once, and a loss is a plausible gap.
        #[test]
        fn any_seq_order_reads_without_overflow(
            seqs in proptest::collection::vec(seq_strategy(), 0..40),
            resume in proptest::option::of(seq_strategy()),
        ) {
            let entries = seqs
                .iter()
                .map(|s| Some(format!("6,{s},{},-;line\n", s / 2).into_bytes()));
            let mut reader = KmsgReader::new(ScriptedSource::new(entries));
            if let Some(done) = resume {
                reader.resume_after(done);
            }
            let mut delivered = Vec::new();
            loop {
                match reader.next_outcome().unwrap() {
                    ReadOutcome::Drained => break,
                    ReadOutcome::Record(r) => delivered.push(r.seq),
                    ReadOutcome::Lost { first_seq, last_seq } => {
                        proptest::prop_assert!(first_seq <= last_seq);
                        proptest::prop_assert!(last_seq - first_seq < MAX_PLAUSIBLE_GAP);
                    }
                    _ => {}
                }
            }
            let expected: Vec<u64> = match resume {
                // The records up to the resume point that come first were handled before.
                Some(done) => seqs.iter().copied().skip_while(|s| *s <= done).collect(),
                None => seqs.clone(),
            };
            proptest::prop_assert_eq!(delivered, expected);
        }
    }
}
