//! Detects, per line, the format of a saved kernel log (kmsg records, `dmesg`, `dmesg -T`, journalctl, `talosctl dmesg`) and parses it.

use super::record::parse_record;
use crate::limits::MAX_SAVED_LINE_BYTES;

/// The format a line was recognised as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LineFormat {
    /// `/dev/kmsg` record: `prio,seq,usec,flags;message`.
    Kmsg,
    /// `dmesg`: `[  950.818166] message`.
    Dmesg,
    /// `dmesg -T`: `[Tue Aug  5 09:03:24 2025] message` (local time, read as UTC).
    DmesgTime,
    /// `dmesg -x` (with or without `-T`): `kern  :err   : [  950.818166] message`; the facility
    /// tells kernel messages from user-space writes to `/dev/kmsg`.
    DmesgDecoded,
    /// journalctl short / short-precise: `Aug 05 09:03:24.804673 host kernel: message`.
    Journal,
    /// `talosctl dmesg`: `node: kern: err: [RFC3339Nano]: message`.
    Talos,
    /// Anything else: the whole line is the message.
    Plain,
}

/// One line of a saved log, whatever its format.
#[derive(Debug, Clone, PartialEq)]
pub struct LogLine {
    pub format: LineFormat,
    pub seq: Option<u64>,
    pub monotonic_usec: Option<u64>,
    pub wall: Option<jiff::Timestamp>,
    /// 0 = kernel; other values were written by user space.
    pub facility: u32,
    pub level: Option<u8>,
    pub message: String,
    pub subsystem: Option<String>,
    pub device: Option<String>,
}

impl LogLine {
    fn plain(format: LineFormat, message: &str) -> Self {
        LogLine {
            format,
            seq: None,
            monotonic_usec: None,
            wall: None,
            facility: 0,
            level: None,
            message: message.to_owned(),
            subsystem: None,
            device: None,
        }
    }

    pub fn user_written(&self) -> bool {
        self.facility != 0
    }
}

/// A kmsg dictionary line (` KEY=value`) that belongs to the record before it.
pub fn dictionary_entry(line: &str) -> Option<(&str, &str)> {
    let entry = line.strip_prefix(' ')?;
    let (key, value) = entry.split_once('=')?;
    (!key.is_empty() && key.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'))
        .then_some((key, value))
}

/// The lines of a saved log, each cut at [`MAX_SAVED_LINE_BYTES`]: a file of one endless
/// line (a binary, a log without newlines) costs that much memory, not its size. Invalid UTF-8
/// becomes U+FFFD; a trailing `\r` is dropped. A read error ends the lines and is kept.
#[derive(Debug)]
pub struct SavedLines<R> {
    input: R,
    line: Vec<u8>,
    lines_cut: u64,
    failed: Option<std::io::Error>,
}

impl<R: std::io::BufRead> SavedLines<R> {
    pub fn new(input: R) -> Self {
        Self {
            input,
            line: Vec::new(),
            lines_cut: 0,
            failed: None,
        }
    }

    /// Lines longer than the bound so far.
    pub fn lines_cut(&self) -> u64 {
        self.lines_cut
    }

    /// The read error that ended the lines, if one did.
    pub fn take_error(&mut self) -> Option<std::io::Error> {
        self.failed.take()
    }
}

impl<R: std::io::BufRead> Iterator for SavedLines<R> {
    type Item = String;

    fn next(&mut self) -> Option<String> {
        self.line.clear();
        let mut read_any = false;
        let mut cut = false;
        loop {
            let available = match self.input.fill_buf() {
                Ok(bytes) => bytes,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.failed = Some(e);
                    return None;
                }
            };
            if available.is_empty() {
                if !read_any {
                    return None;
                }
                break;
            }
            read_any = true;
            let (content, used) = match available.iter().position(|&b| b == b'\n') {
                Some(at) => (&available[..at], at + 1),
                None => (available, available.len()),
            };
            let room = MAX_SAVED_LINE_BYTES.saturating_sub(self.line.len());
            cut |= content.len() > room;
            self.line
                .extend_from_slice(&content[..content.len().min(room)]);
            let ended = used > content.len();
            self.input.consume(used);
            if ended {
                break;
            }
        }
        if self.line.last() == Some(&b'\r') {
            self.line.pop();
        }
        let mut text = String::from_utf8_lossy(&self.line).into_owned();
        if cut {
            self.lines_cut += 1;
            text.push_str(" …(line cut)");
        }
        Some(text)
    }
}

/// Parses one line. `year` dates journalctl lines, which print none. Total: never panics.
pub fn parse_line(line: &str, year: i16) -> LogLine {
    let line = line.strip_suffix('\r').unwrap_or(line);
    let bytes = line.as_bytes();
    match bytes.first() {
        Some(b'0'..=b'9') => {
            if let Some(parsed) = parse_kmsg(line) {
                return parsed;
            }
        }
        Some(b'[') => {
            if let Some(parsed) = parse_dmesg(line) {
                return parsed;
            }
        }
        Some(b'A'..=b'Z') => {
            if let Some(parsed) = parse_journal(line, year) {
                return parsed;
            }
        }
        _ => {}
    }
    if let Some(parsed) = parse_talos(line).or_else(|| parse_dmesg_decoded(line)) {
        return parsed;
    }
    LogLine::plain(LineFormat::Plain, line)
}

fn parse_kmsg(line: &str) -> Option<LogLine> {
    let record = parse_record(line.as_bytes()).ok()?;
    Some(LogLine {
        format: LineFormat::Kmsg,
        seq: Some(record.seq),
        monotonic_usec: Some(record.ts_usec),
        wall: None,
        facility: record.facility,
        level: Some(record.level),
        message: record.message,
        subsystem: record.subsystem,
        device: record.device,
    })
}

/// `12.345678` → µs.
fn seconds_to_usec(text: &str) -> Option<u64> {
    let (secs, frac) = text.split_once('.').unwrap_or((text, ""));
    if secs.is_empty() || !secs.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) || frac.len() > 9 {
        return None;
    }
    let secs: u64 = secs.parse().ok()?;
    let mut micros: u64 = 0;
    for (i, digit) in frac
        .bytes()
        .chain(std::iter::repeat(b'0'))
        .take(6)
        .enumerate()
    {
        let _ = i;
        micros = micros * 10 + u64::from(digit - b'0');
    }
    secs.checked_mul(1_000_000)?.checked_add(micros)
}

fn parse_dmesg(line: &str) -> Option<LogLine> {
    let close = line.find(']')?;
    let inside = line.get(1..close)?.trim();
    let message = line
        .get(close + 1..)?
        .strip_prefix(' ')
        .unwrap_or(line.get(close + 1..)?);
    if let Some(usec) = seconds_to_usec(inside) {
        let mut out = LogLine::plain(LineFormat::Dmesg, message);
        out.monotonic_usec = Some(usec);
        return Some(out);
    }
    // `Tue Aug  5 09:03:24 2025`
    let parts: Vec<&str> = inside.split_whitespace().collect();
    if let [_weekday, month, day, time, year] = parts[..] {
        let text = format!("{year} {month} {day} {time}");
        let civil = jiff::civil::DateTime::strptime("%Y %b %d %H:%M:%S", &text).ok()?;
        let wall = civil
            .to_zoned_datetime(jiff::tz::TimeZone::UTC)
            .ok()?
            .timestamp();
        let mut out = LogLine::plain(LineFormat::DmesgTime, message);
        out.wall = Some(wall);
        return Some(out);
    }
    None
}

fn parse_journal(line: &str, year: i16) -> Option<LogLine> {
    // `Aug 05 09:03:24[.804673] host ident[pid]: message`
    let mut fields = line.splitn(5, ' ');
    let month = fields.next()?;
    let day = fields.next()?;
    let time = fields.next()?;
    let _host = fields.next()?;
    let rest = fields.next()?;
    if month.len() != 3 || day.is_empty() || day.len() > 2 {
        return None;
    }
    let (ident, message) = rest.split_once(": ")?;
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let text = format!("{year} {month} {day} {hms}");
    let civil = jiff::civil::DateTime::strptime("%Y %b %d %H:%M:%S", &text).ok()?;
    let mut wall = civil
        .to_zoned_datetime(jiff::tz::TimeZone::UTC)
        .ok()?
        .timestamp();
    if !frac.is_empty() {
        let micros = seconds_to_usec(&format!("0.{frac}"))?;
        wall = wall
            .checked_add(jiff::SignedDuration::from_micros(
                i64::try_from(micros).ok()?,
            ))
            .ok()?;
    }
    let mut out = LogLine::plain(LineFormat::Journal, message);
    out.wall = Some(wall);
    if ident != "kernel" {
        // A user-space program's line: the same rule as a kmsg record of facility ≠ 0.
        out.facility = 1;
    }
    Some(out)
}

const FACILITIES: [&str; 24] = [
    "kern",
    "user",
    "mail",
    "daemon",
    "auth",
    "syslog",
    "lpr",
    "news",
    "uucp",
    "cron",
    "authpriv",
    "ftp",
    "ntp",
    "security",
    "console",
    "solaris-cron",
    "local0",
    "local1",
    "local2",
    "local3",
    "local4",
    "local5",
    "local6",
    "local7",
];
const LEVELS: [&str; 8] = [
    "emerg", "alert", "crit", "err", "warning", "notice", "info", "debug",
];

fn parse_talos(line: &str) -> Option<LogLine> {
    // `[node: ]kern:    info: [2026-01-06T19:44:34.377086477Z]: message`
    let open = line.find(": [")?;
    let after = line.get(open + 3..)?;
    let close = after
        .find("]: ")
        .or_else(|| after.strip_suffix(']').map(|s| s.len()))?;
    let stamp = after.get(..close)?;
    let wall: jiff::Timestamp = stamp.parse().ok()?;
    let message = after.get(close + 2..).unwrap_or("");
    let message = message.strip_prefix(' ').unwrap_or(message);
    let mut head = line.get(..open)?.rsplit(':').map(str::trim);
    let level_name = head.next()?;
    let facility_name = head.next()?;
    let level = LEVELS.iter().position(|l| *l == level_name)?;
    let facility = FACILITIES.iter().position(|f| *f == facility_name)?;
    let mut out = LogLine::plain(LineFormat::Talos, message);
    out.wall = Some(wall);
    out.level = u8::try_from(level).ok();
    out.facility = u32::try_from(facility).ok()?;
    Some(out)
}

fn parse_dmesg_decoded(line: &str) -> Option<LogLine> {
    // `user  :notice: [ 1.0] message`: facility and level padded to six columns.
    let (facility_name, rest) = line.split_once(':')?;
    let (level_name, rest) = rest.split_once(':')?;
    let facility = FACILITIES
        .iter()
        .position(|f| *f == facility_name.trim_end())?;
    let level = LEVELS.iter().position(|l| *l == level_name.trim_end())?;
    let mut out = parse_dmesg(rest.trim_start())?;
    out.format = LineFormat::DmesgDecoded;
    out.level = u8::try_from(level).ok();
    out.facility = u32::try_from(facility).ok()?;
    Some(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn saved_lines_are_cut_at_the_bound_and_keep_the_rest() {
        let long = "x".repeat(MAX_SAVED_LINE_BYTES * 3);
        let input = format!("first\r\n{long}\nlast");
        // A small buffer, so the long line spans many fills.
        let mut lines = SavedLines::new(std::io::BufReader::with_capacity(100, input.as_bytes()));
        assert_eq!(lines.next().as_deref(), Some("first"));
        let cut = lines.next().unwrap();
        assert!(cut.len() < MAX_SAVED_LINE_BYTES + 20 && cut.ends_with("(line cut)"));
        assert_eq!(lines.next().as_deref(), Some("last"));
        assert_eq!(lines.next(), None);
        assert_eq!(lines.lines_cut(), 1);
        let mut empty = SavedLines::new(&b""[..]);
        assert_eq!(empty.next(), None);
        let mut binary = SavedLines::new(&[0xff, 0xfe, b'\n'][..]);
        assert_eq!(binary.next().as_deref(), Some("\u{fffd}\u{fffd}"));
    }

    const MSG: &str = "amdgpu 0000:c1:00.0: amdgpu: MES failed to respond to msg=REMOVE_QUEUE";

    #[test]
    fn detects_every_format() {
        let k = parse_line(&format!("3,1234,950818166,-;{MSG}"), 2025);
        assert_eq!(
            (k.format, k.seq, k.monotonic_usec),
            (LineFormat::Kmsg, Some(1234), Some(950_818_166))
        );
        assert_eq!(k.message, MSG);

        let d = parse_line(&format!("[  950.818166] {MSG}"), 2025);
        assert_eq!(
            (d.format, d.monotonic_usec),
            (LineFormat::Dmesg, Some(950_818_166))
        );
        assert_eq!(d.message, MSG);

        let t = parse_line(&format!("[Tue Aug  5 09:03:24 2025] {MSG}"), 2000);
        assert_eq!(t.format, LineFormat::DmesgTime);
        assert_eq!(t.wall.unwrap().to_string(), "2025-08-05T09:03:24Z");
        assert_eq!(t.message, MSG);

        let j = parse_line(&format!("Aug 05 09:03:24 node1 kernel: {MSG}"), 2025);
        assert_eq!(j.format, LineFormat::Journal);
        assert_eq!(j.wall.unwrap().to_string(), "2025-08-05T09:03:24Z");
        assert!(!j.user_written());

        let jp = parse_line(&format!("Aug 05 09:03:24.804673 node1 kernel: {MSG}"), 2025);
        assert_eq!(jp.wall.unwrap().to_string(), "2025-08-05T09:03:24.804673Z");
        assert_eq!(jp.message, MSG);

        let u = parse_line(
            "Aug 05 09:03:24 node1 sshd[12]: amdgpu: GPU reset begin!",
            2025,
        );
        assert!(u.user_written());

        let talos = parse_line(
            &format!("172.20.0.5: kern:     err: [2026-01-06T19:44:34.377086477Z]: {MSG}"),
            2025,
        );
        assert_eq!(talos.format, LineFormat::Talos);
        assert_eq!(talos.level, Some(3));
        assert_eq!(talos.message, MSG);
        assert_eq!(
            talos.wall.unwrap().to_string(),
            "2026-01-06T19:44:34.377086477Z"
        );
        let talos_user = parse_line("user: warning: [2026-01-06T19:44:34Z]: hi", 2025);
        assert!(talos_user.user_written());

        let x = parse_line(&format!("kern  :err   : [  950.818166] {MSG}"), 2025);
        assert_eq!(
            (x.format, x.monotonic_usec, x.level),
            (LineFormat::DmesgDecoded, Some(950_818_166), Some(3))
        );
        assert_eq!(x.message, MSG);
        assert!(!x.user_written());
        let xt = parse_line(
            &format!("kern  :warn  : [Tue Aug  5 09:03:24 2025] {MSG}"),
            2025,
        );
        assert_eq!(xt.format, LineFormat::Plain, "`warn` is not a level name");
        let xt = parse_line(
            &format!("kern  :warning: [Tue Aug  5 09:03:24 2025] {MSG}"),
            2025,
        );
        assert_eq!(xt.wall.unwrap().to_string(), "2025-08-05T09:03:24Z");
        // A user-space write to /dev/kmsg posing as the driver.
        let xu = parse_line(
            "user  :notice: [ 1.000000] amdgpu 0000:c1:00.0: amdgpu: GPU reset begin!",
            2025,
        );
        assert!(xu.user_written());

        let p = parse_line("just text", 2025);
        assert_eq!(
            (p.format, p.message.as_str()),
            (LineFormat::Plain, "just text")
        );
    }

    #[test]
    fn recognises_dictionary_lines() {
        assert_eq!(
            dictionary_entry(" DEVICE=+pci:0000:c1:00.0"),
            Some(("DEVICE", "+pci:0000:c1:00.0"))
        );
        assert_eq!(dictionary_entry("DEVICE=x"), None);
        assert_eq!(dictionary_entry(" Process x pid=3"), None);
    }

    proptest! {
        #[test]
        fn never_panics(line in "\\PC{0,200}") {
            let _ = parse_line(&line, 2025);
        }

        #[test]
        fn never_panics_on_mutated_lines(cut in 0usize..80, pick in 0usize..5) {
            let samples = [
                "[  950.818166] amdgpu: x",
                "[Tue Aug  5 09:03:24 2025] amdgpu: x",
                "Aug 05 09:03:24.804673 node1 kernel: amdgpu: x",
                "n: kern: err: [2026-01-06T19:44:34.377086477Z]: amdgpu: x",
                "3,1234,950818166,-;amdgpu: x",
            ];
            let s = samples[pick];
            let cut = (0..=cut.min(s.len())).rev().find(|c| s.is_char_boundary(*c)).unwrap_or(0);
            let _ = parse_line(&s[..cut], 2025);
        }
    }
}
