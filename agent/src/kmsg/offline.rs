//! Detects, per line, the format of a saved kernel log (kmsg records, `dmesg` in its forms, journalctl and syslog in any locale, `talosctl dmesg`, `kubectl logs`) and parses it, or finds the GPU message in a line of no known form.

use super::record::{parse_header, parse_record};
pub use nodectl_model::log_wrapper::JournalYear;
use nodectl_model::log_wrapper::{
    digits, fraction_usec, host_ident_message, journal_iso, journal_short, rfc3339_head,
};

/// The format a line was recognised as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LineFormat {
    /// `/dev/kmsg` record: `prio,seq,usec,flags;message`.
    Kmsg,
    /// `dmesg`: `[  950.818166] message`; `dmesg -r` puts the priority before it: `<3>[…] …`.
    Dmesg,
    /// `dmesg -T`: `[Tue Aug  5 09:03:24 2025] message` (local time, read as UTC).
    DmesgTime,
    /// `dmesg -x` (with or without `-T`): `kern  :err   : [  950.818166] message`; the facility
    /// tells kernel messages from user-space writes to `/dev/kmsg`.
    DmesgDecoded,
    /// journalctl short / short-precise and syslog files: `Aug 05 09:03:24[.804673] host
    /// kernel: message`, the month in any language of [`MONTHS`]; syslog's `[ 2237.944235] `
    /// after `kernel: ` is the monotonic stamp.
    Journal,
    /// journalctl short-iso (and RFC 3339 syslog): `2025-08-05T09:03:24+0200 host kernel: …`.
    JournalIso,
    /// journalctl short-monotonic: `[  950.818166] host kernel: message`.
    JournalMonotonic,
    /// `talosctl dmesg`: `node: kern: err: [RFC3339Nano]: message`.
    Talos,
    /// `kubectl logs --timestamps` of a pod that prints the kernel log: an RFC 3339 stamp, then
    /// a line of another format (its own stamps kept) or a bare message.
    Kubectl,
    /// No known prefix, but an amdgpu/DRM/KFD marker: the message starts there (text copied out
    /// of a report, a prefix of a tool not known here).
    Located,
    /// A record of the KFD SMI event channel, as its fd gives it (`3 1 MES hang`): a saved
    /// file of records, or records pasted beside the kernel log.
    KfdSmi,
    /// Anything else: the whole line is the message.
    Plain,
}

impl LineFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            LineFormat::Kmsg => "kmsg",
            LineFormat::Dmesg => "dmesg",
            LineFormat::DmesgTime => "dmesg_time",
            LineFormat::DmesgDecoded => "dmesg_decoded",
            LineFormat::Journal => "journal",
            LineFormat::JournalIso => "journal_iso",
            LineFormat::JournalMonotonic => "journal_monotonic",
            LineFormat::Talos => "talos",
            LineFormat::Kubectl => "kubectl",
            LineFormat::Located => "located",
            LineFormat::KfdSmi => "kfd_smi",
            LineFormat::Plain => "plain",
        }
    }

    /// A line of a kernel log format, not text in which a message was merely found.
    pub fn is_kernel_log(self) -> bool {
        !matches!(self, LineFormat::Located | LineFormat::Plain)
    }
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
    pub fn user_written(&self) -> bool {
        self.facility != 0
    }
}

/// A line's prefix read, its message still in the line: what format detection costs without a
/// copy (kmsg records, whose messages are unescaped, are read by [`parse_record`]).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Head<'a> {
    format: LineFormat,
    monotonic_usec: Option<u64>,
    wall: Option<jiff::Timestamp>,
    facility: u32,
    level: Option<u8>,
    message: &'a str,
}

impl<'a> Head<'a> {
    fn new(format: LineFormat, message: &'a str) -> Self {
        Head {
            format,
            monotonic_usec: None,
            wall: None,
            facility: 0,
            level: None,
            message,
        }
    }

    fn into_line(self) -> LogLine {
        LogLine {
            format: self.format,
            seq: None,
            monotonic_usec: self.monotonic_usec,
            wall: self.wall,
            facility: self.facility,
            level: self.level,
            message: self.message.to_owned(),
            subsystem: None,
            device: None,
        }
    }
}

/// A kmsg dictionary line (` KEY=value`) that belongs to the record before it.
pub fn dictionary_entry(line: &str) -> Option<(&str, &str)> {
    let entry = line.strip_prefix(' ')?;
    let (key, value) = entry.split_once('=')?;
    (!key.is_empty() && key.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'))
        .then_some((key, value))
}

/// Parses one line on its own, `year` the year of journalctl lines, which print none (see
/// [`parse_dated`] for the lines of one log). Total: never panics.
#[cfg(test)]
pub fn parse_line(line: &str, year: i16) -> LogLine {
    parse_dated(line, &mut JournalYear::given(year))
}

/// Parses a line of a log whose journal lines `years` dates, one after the other. Total: never
/// panics.
pub fn parse_dated(line: &str, years: &mut JournalYear) -> LogLine {
    let line = line.strip_suffix('\r').unwrap_or(line);
    if line.as_bytes().first().is_some_and(u8::is_ascii_digit)
        && let Some(record) = parse_kmsg(line)
    {
        return record;
    }
    head_of(line, years).into_line()
}

/// The format of a line and, for a kmsg record, its sequence number: what [`parse_dated`]
/// finds, without copying the message (for the lines of a log that hold no GPU message).
pub fn line_format(line: &str, years: &mut JournalYear) -> (LineFormat, Option<u64>) {
    let line = line.strip_suffix('\r').unwrap_or(line);
    if line.as_bytes().first().is_some_and(u8::is_ascii_digit)
        && let Ok(header) = parse_header(line.as_bytes())
    {
        return (LineFormat::Kmsg, Some(header.seq));
    }
    (head_of(line, years).format, None)
}

fn head_of<'l>(line: &'l str, years: &mut JournalYear) -> Head<'l> {
    if let Some(parsed) = parse_known(line, years) {
        return parsed;
    }
    // `kubectl logs --timestamps`: the pod's line after the stamp.
    if let Some((wall, rest)) = rfc3339_head(line) {
        let mut inner = parse_known(rest, years).unwrap_or_else(|| located(rest));
        inner.format = LineFormat::Kubectl;
        inner.wall = inner.wall.or(Some(wall));
        return inner;
    }
    located(line)
}

/// The line as one of the kernel log formats other than kmsg, if it is one.
fn parse_known<'l>(line: &'l str, years: &mut JournalYear) -> Option<Head<'l>> {
    let bytes = line.as_bytes();
    let parsed = match bytes.first() {
        Some(b'0'..=b'9') => parse_journal_iso(line),
        Some(b'[') => parse_dmesg(line).map(journal_monotonic),
        Some(b'<') => parse_dmesg_raw(line),
        Some(_) => parse_journal(line, years),
        None => None,
    };
    parsed.or_else(|| parse_talos(line).or_else(|| parse_dmesg_decoded(line)))
}

/// A line of no known format: the message from its first GPU marker on, or the whole line.
fn located(line: &str) -> Head<'_> {
    let start = super::classify::GPU_STACK_PREFIXES
        .iter()
        .filter_map(|marker| line.find(marker))
        .min();
    match start {
        Some(at) if at > 0 => Head::new(LineFormat::Located, &line[at..]),
        _ => Head::new(LineFormat::Plain, line),
    }
}

/// What the journal says of who wrote a line: the kernel, or a program (`name[pid]`).
fn journal_ident_facility(ident: &str) -> Option<u32> {
    if ident == "kernel" {
        return Some(0);
    }
    let (name, pid) = ident.strip_suffix(']')?.split_once('[')?;
    (!name.is_empty() && !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit())).then_some(1)
}

/// A kernel line of syslog carries the monotonic stamp after `kernel: `.
fn take_monotonic(out: &mut Head<'_>) {
    if out.facility != 0 || !out.message.starts_with('[') {
        return;
    }
    if let Some(inner) = parse_dmesg(out.message)
        && inner.format == LineFormat::Dmesg
    {
        out.monotonic_usec = inner.monotonic_usec;
        out.message = inner.message;
    }
}

/// `[  950.818166] host kernel: message` (journalctl short-monotonic) is not a dmesg line
/// whose message begins `host kernel: `.
fn journal_monotonic(mut line: Head<'_>) -> Head<'_> {
    if line.format != LineFormat::Dmesg {
        return line;
    }
    // Cheap test first (every dmesg line comes here): the ident is `kernel` or `name[pid]`,
    // so `kernel:` or `]:` follows the host.
    let Some((_host, after)) = line.message.split_once(' ') else {
        return line;
    };
    if !after.starts_with("kernel:")
        && memchr::memmem::find(
            after.as_bytes().get(..64).unwrap_or(after.as_bytes()),
            b"]:",
        )
        .is_none()
    {
        return line;
    }
    if let Some((ident, message)) = host_ident_message(line.message)
        && let Some(facility) = journal_ident_facility(ident)
    {
        line.format = LineFormat::JournalMonotonic;
        line.facility = facility;
        line.message = message;
    }
    line
}

/// `dmesg -r`: `<3>[  950.818166] message` (priority = facility × 8 + level).
fn parse_dmesg_raw(line: &str) -> Option<Head<'_>> {
    let (priority, rest) = line.strip_prefix('<')?.split_once('>')?;
    let priority: u32 = priority.parse().ok()?;
    let mut out = parse_dmesg(rest)?;
    out.level = u8::try_from(priority & 7).ok();
    out.facility = priority >> 3;
    Some(out)
}

fn parse_journal_iso(line: &str) -> Option<Head<'_>> {
    let journal = journal_iso(line)?;
    let facility = journal_ident_facility(journal.ident)?;
    let mut out = Head::new(LineFormat::JournalIso, journal.message);
    out.wall = journal.wall;
    out.facility = facility;
    take_monotonic(&mut out);
    Some(out)
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
    if secs.is_empty() {
        return None;
    }
    digits(secs)?
        .checked_mul(1_000_000)?
        .checked_add(fraction_usec(frac)?)
}

fn parse_dmesg(line: &str) -> Option<Head<'_>> {
    let close = memchr::memchr(b']', line.as_bytes())?;
    let inside = line.get(1..close)?.trim();
    let message = line
        .get(close + 1..)?
        .strip_prefix(' ')
        .unwrap_or(line.get(close + 1..)?);
    if let Some(usec) = seconds_to_usec(inside) {
        let mut out = Head::new(LineFormat::Dmesg, message);
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
        let mut out = Head::new(LineFormat::DmesgTime, message);
        out.wall = Some(wall);
        return Some(out);
    }
    None
}

fn parse_journal<'l>(line: &'l str, years: &mut JournalYear) -> Option<Head<'l>> {
    let journal = journal_short(line, years)?;
    let mut out = Head::new(LineFormat::Journal, journal.message);
    // A user-space program's line: the same rule as a kmsg record of facility ≠ 0.
    out.facility = u32::from(journal.ident != "kernel");
    out.wall = journal.wall;
    take_monotonic(&mut out);
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

fn parse_talos(line: &str) -> Option<Head<'_>> {
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
    let mut out = Head::new(LineFormat::Talos, message);
    out.wall = Some(wall);
    out.level = u8::try_from(level).ok();
    out.facility = u32::try_from(facility).ok()?;
    Some(out)
}

fn parse_dmesg_decoded(line: &str) -> Option<Head<'_>> {
    // `user  :notice: [ 1.0] message`: facility and level padded to six columns.
    let (facility_name, rest) = line.split_once(':')?;
    let (level_name, rest) = rest.split_once(':')?;
    let facility = FACILITIES
        .iter()
        .position(|f| *f == facility_name.trim_end())?;
    // util-linux prints level 4 as `warn`.
    let level_name = match level_name.trim_end() {
        "warn" => "warning",
        other => other,
    };
    let level = LEVELS.iter().position(|l| *l == level_name)?;
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
        // util-linux's name of level 4.
        assert_eq!((xt.format, xt.level), (LineFormat::DmesgDecoded, Some(4)));
        let odd = parse_line(&format!("kern  :loud  : [  950.818166] {MSG}"), 2025);
        assert_eq!(
            (odd.format, odd.message.as_str()),
            (LineFormat::Located, MSG)
        );
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
    fn detects_syslog_other_locales_iso_monotonic_raw_kubectl_and_unknown_prefixes() {
        let syslog = parse_line(
            &format!("Oct  7 12:58:23 gpu1 kernel: [ 2237.944235] {MSG}"),
            2025,
        );
        assert_eq!(syslog.format, LineFormat::Journal);
        assert_eq!(syslog.monotonic_usec, Some(2_237_944_235));
        assert_eq!(syslog.wall.unwrap().to_string(), "2025-10-07T12:58:23Z");
        assert_eq!(syslog.message, MSG);

        for (line, month) in [
            (format!("maj 08 19:27:35 host kernel: {MSG}"), "05"),
            (format!("août 08 19:27:35 host kernel: {MSG}"), "08"),
            (format!("févr. 08 19:27:35 host kernel: {MSG}"), "02"),
            (format!("окт 08 19:27:35 host kernel: {MSG}"), "10"),
            (format!("Dez 08 19:27:35 host kernel: {MSG}"), "12"),
        ] {
            let parsed = parse_line(&line, 2025);
            assert_eq!(parsed.format, LineFormat::Journal, "{line}");
            assert_eq!(parsed.message, MSG, "{line}");
            let wall = parsed.wall.unwrap().to_string();
            assert_eq!(&wall[5..7], month, "{line}");
        }
        // A month of a language not known here: still a journal line, without its time.
        let unknown = parse_line(&format!("xyz 08 19:27:35 host kernel: {MSG}"), 2025);
        assert_eq!((unknown.format, unknown.wall), (LineFormat::Journal, None));

        let iso = parse_line(
            &format!("2025-08-05T11:03:24+0200 node1 kernel: {MSG}"),
            2025,
        );
        assert_eq!(iso.format, LineFormat::JournalIso);
        assert_eq!(iso.wall.unwrap().to_string(), "2025-08-05T09:03:24Z");
        assert_eq!(iso.message, MSG);

        let mono = parse_line(&format!("[  950.818166] node1 kernel: {MSG}"), 2025);
        assert_eq!(
            (mono.format, mono.monotonic_usec, mono.message.as_str()),
            (LineFormat::JournalMonotonic, Some(950_818_166), MSG)
        );
        // A dmesg line whose message has that shape is still dmesg.
        let usb = parse_line("[    5.000000] usb 1-1: new high-speed USB device", 2025);
        assert_eq!(usb.format, LineFormat::Dmesg);

        let raw = parse_line(&format!("<3>[  950.818166] {MSG}"), 2025);
        assert_eq!(
            (raw.format, raw.level, raw.message.as_str()),
            (LineFormat::Dmesg, Some(3), MSG)
        );

        let kubectl = parse_line(
            &format!("2025-08-05T09:03:24.804673Z [  950.818166] {MSG}"),
            2025,
        );
        assert_eq!(kubectl.format, LineFormat::Kubectl);
        assert_eq!(kubectl.monotonic_usec, Some(950_818_166));
        assert_eq!(
            kubectl.wall.unwrap().to_string(),
            "2025-08-05T09:03:24.804673Z"
        );
        assert_eq!(kubectl.message, MSG);
        let bare = parse_line(&format!("2025-08-05T09:03:24Z {MSG}"), 2025);
        assert_eq!(
            (bare.format, bare.message.as_str()),
            (LineFormat::Kubectl, MSG)
        );

        let pasted = parse_line(&format!("  kernel | 12:58:23.944 | {MSG}"), 2025);
        assert_eq!(
            (pasted.format, pasted.message.as_str()),
            (LineFormat::Located, MSG)
        );
        let freebsd = parse_line(
            "Oct  7 12:58:23 bsd kernel: drmn0: [drm] GPU reset begin!",
            2025,
        );
        assert_eq!(
            (freebsd.format, freebsd.message.as_str()),
            (LineFormat::Journal, "drmn0: [drm] GPU reset begin!")
        );
    }

    /// Stamps of journal lines read one after the other from `years`.
    fn walls(lines: &[&str], mut years: JournalYear) -> Vec<String> {
        lines
            .iter()
            .map(|line| {
                let parsed = parse_dated(&format!("{line} node1 kernel: {MSG}"), &mut years);
                parsed.wall.map(|t| t.to_string()).unwrap_or_default()
            })
            .collect()
    }

    #[test]
    fn journal_lines_across_new_year_keep_their_times_increasing() {
        let lines = [
            "Dec 31 23:59:58",
            "Dec 31 23:59:59",
            "Jan 01 00:00:01",
            "Jan 01 00:00:02",
        ];
        assert_eq!(
            walls(&lines, JournalYear::given(2025)),
            [
                "2025-12-31T23:59:58Z",
                "2025-12-31T23:59:59Z",
                "2026-01-01T00:00:01Z",
                "2026-01-01T00:00:02Z"
            ]
        );
        // Read in January: the December lines are last year's, the January ones this year's.
        let today = jiff::civil::date(2026, 1, 2);
        assert_eq!(
            walls(&lines, JournalYear::before(today))[1..3],
            ["2025-12-31T23:59:59Z", "2026-01-01T00:00:01Z"]
        );
        // Months of a year and the next one, with a month skipped (Feb → Apr) and a step back
        // of a clock set back across New Year.
        assert_eq!(
            walls(
                &[
                    "Nov 30 10:00:00",
                    "Feb 01 10:00:00",
                    "Apr 01 10:00:00",
                    "Jan 01 00:00:00"
                ],
                JournalYear::given(2025)
            ),
            [
                "2025-11-30T10:00:00Z",
                "2026-02-01T10:00:00Z",
                "2026-04-01T10:00:00Z",
                "2026-01-01T00:00:00Z"
            ]
        );
        assert_eq!(
            walls(
                &["Jan 01 00:00:01", "Dec 31 23:59:59"],
                JournalYear::given(2026)
            ),
            ["2026-01-01T00:00:01Z", "2025-12-31T23:59:59Z"]
        );
    }

    #[test]
    fn the_default_year_puts_the_first_line_no_later_than_tomorrow() {
        let today = jiff::civil::date(2026, 6, 15);
        let first = |line: &str| walls(&[line], JournalYear::before(today)).remove(0);
        assert_eq!(first("Jun 15 12:00:00"), "2026-06-15T12:00:00Z");
        // Local time ahead of UTC: tomorrow is still this year.
        assert_eq!(first("Jun 16 01:00:00"), "2026-06-16T01:00:00Z");
        assert_eq!(first("Jun 17 01:00:00"), "2025-06-17T01:00:00Z");
        assert_eq!(first("Dec 24 01:00:00"), "2025-12-24T01:00:00Z");
        // On New Year's Eve every date of the year is past or today.
        let eve = JournalYear::before(jiff::civil::date(2026, 12, 31));
        assert_eq!(walls(&["Dec 31 23:00:00"], eve), ["2026-12-31T23:00:00Z"]);
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
