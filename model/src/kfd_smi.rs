//! KFD SMI event records (`AMDKFD_IOC_SMI_EVENTS`): the text the anon fd gives, split into records and parsed by event id, every kernel's form; what is not understood is kept raw.
//!
//! A record is `"%x "` (the event id in lower-case hex) and a body that ends in `\n`; bodies are
//! per id (`KFD_EVENT_FMT_*` in `kfd_ioctl.h`). Known deviations, all accepted: QUEUE_RESTORE of
//! 6.12 kernels without the fix ends in a NUL byte; before 6.12 it has no fourth field;
//! MIGRATE_END before ≈6.13 has no error code; GPU reset records before ≈6.11 have no cause, and
//! POST_RESET's cause is empty (a trailing space); id `c` of a 2024 staging build is
//! DROPPED_EVENT (`ns -pid count`), not PROCESS_START.

use serde::{Deserialize, Serialize};

/// The largest record the kernel writes, NUL included (`KFD_SMI_EVENT_MSG_SIZE`); a line longer
/// than this is not a record of the channel and is kept raw, cut here.
pub const MAX_RECORD_BYTES: usize = 96;

/// What a record is, by its event id.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmiEventKind {
    VmFault,
    ThermalThrottle,
    GpuPreReset,
    GpuPostReset,
    MigrateStart,
    MigrateEnd,
    PageFaultStart,
    PageFaultEnd,
    QueueEviction,
    QueueRestore,
    UnmapFromGpu,
    ProcessStart,
    ProcessEnd,
    /// Id `c` in the `ns -pid count` form of a 2024 staging kernel (reverted before a release).
    DroppedEvents,
    /// An id this parser does not know, or a body not of its id's forms: kept raw.
    #[default]
    Unknown,
}

impl SmiEventKind {
    /// The kernel's name without its `KFD_SMI_EVENT_` prefix, lower-case: `gpu_pre_reset`.
    pub fn as_str(self) -> &'static str {
        match self {
            SmiEventKind::VmFault => "vm_fault",
            SmiEventKind::ThermalThrottle => "thermal_throttle",
            SmiEventKind::GpuPreReset => "gpu_pre_reset",
            SmiEventKind::GpuPostReset => "gpu_post_reset",
            SmiEventKind::MigrateStart => "migrate_start",
            SmiEventKind::MigrateEnd => "migrate_end",
            SmiEventKind::PageFaultStart => "page_fault_start",
            SmiEventKind::PageFaultEnd => "page_fault_end",
            SmiEventKind::QueueEviction => "queue_eviction",
            SmiEventKind::QueueRestore => "queue_restore",
            SmiEventKind::UnmapFromGpu => "unmap_from_gpu",
            SmiEventKind::ProcessStart => "process_start",
            SmiEventKind::ProcessEnd => "process_end",
            SmiEventKind::DroppedEvents => "dropped_events",
            SmiEventKind::Unknown => "unknown",
        }
    }
}

/// One record, with what its body says. Fields the record's form lacks are `None`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SmiRecord {
    /// The event id as the kernel printed it (hex), `None` when even that was unreadable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<u32>,
    pub kind: SmiEventKind,
    /// CLOCK_BOOTTIME, nanoseconds (events 5–b and DROPPED).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boottime_ns: Option<u64>,
    /// A host pid (VMFAULT and PROCESS_*: the thread id of the task; 5–b: the process).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// The task's comm (VMFAULT, PROCESS_*).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comm: Option<String>,
    /// The KFD gpu_id the event names (`node`), as the decimal sysfs `gpu_id` is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_id: Option<u32>,
    /// GPU reset: the node's reset counter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reset_seq: Option<u32>,
    /// GPU pre-reset: why (`MES hang`, `job hang on ring:gfx_0.0.0`, …); empty on post-reset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reset_cause: Option<String>,
    /// Page address (in 4 KiB pages) of a migration, fault or unmap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address_pages: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_pages: Option<u64>,
    /// Migration source and destination gpu_ids (0: system memory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_gpu_id: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_gpu_id: Option<u32>,
    /// Why a migration, eviction or unmap happened, by the kernel's trigger enum.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<String>,
    /// `R`/`W` of a page fault, `M`/`U` of its end, `R` of a rescheduled restore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flag: Option<char>,
    /// MIGRATE_END's error code (0 or a negative errno), on kernels that print it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<i32>,
    /// THERMAL_THROTTLE's bitmask and counter; DROPPED's count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bitmask: Option<u64>,
    /// The record as read, NUL bytes and the newline removed, control characters kept.
    pub raw: String,
    /// Why the body was not understood, for an `unknown` record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unparsed: Option<String>,
}

const MIGRATE_TRIGGERS: [&str; 4] = ["prefetch", "pagefault_gpu", "pagefault_cpu", "ttm_eviction"];
const EVICTION_TRIGGERS: [&str; 6] = [
    "svm",
    "userptr",
    "ttm",
    "suspend",
    "criu_checkpoint",
    "criu_restore",
];
const UNMAP_TRIGGERS: [&str; 3] = ["mmu_notify", "mmu_notify_migrate", "unmap_from_cpu"];

fn trigger_name(names: &[&str], text: &str) -> Option<String> {
    let n: i64 = text.parse().ok()?;
    Some(
        usize::try_from(n)
            .ok()
            .and_then(|i| names.get(i))
            .map_or_else(|| format!("trigger_{n}"), |s| (*s).to_owned()),
    )
}

fn hex_u32(text: &str) -> Option<u32> {
    if text.is_empty() || text.len() > 8 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(text, 16).ok()
}

fn hex_u64(text: &str) -> Option<u64> {
    if text.is_empty() || text.len() > 16 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(text, 16).ok()
}

/// `@ADDR(N)` of events 5, 6, 7, 8 and b: the address and the parenthesised hex value.
fn at_paren(text: &str) -> Option<(u64, u64)> {
    let inner = text.strip_prefix('@')?.strip_suffix(')')?;
    let (addr, value) = inner.split_once('(')?;
    Some((hex_u64(addr)?, hex_u64(value)?))
}

/// `FROM->TO` gpu_ids.
fn arrow(text: &str) -> Option<(u32, u32)> {
    let (from, to) = text.split_once("->")?;
    Some((hex_u32(from)?, hex_u32(to)?))
}

/// `NS -PID` that begins events 5–b (and DROPPED), and the fields after it.
fn ns_pid(body: &str) -> Option<(u64, u32, Vec<&str>)> {
    let mut fields = body.split(' ');
    let ns = fields.next()?.parse().ok()?;
    let pid = fields.next()?.strip_prefix('-')?.parse().ok()?;
    Some((ns, pid, fields.collect()))
}

fn one_char(text: &str) -> Option<char> {
    let mut chars = text.chars();
    let c = chars.next()?;
    chars.next().is_none().then_some(c)
}

/// Parses one record (its line, without the newline; NUL bytes are dropped here). Never fails:
/// what is not understood comes back as [`SmiEventKind::Unknown`] with the reason and the raw text.
pub fn parse_record(line: &[u8]) -> SmiRecord {
    // Raw text is kept to a few records' length: a line this long is no record anyway.
    let cut = &line[..line.len().min(MAX_RECORD_BYTES * 4)];
    let kept: Vec<u8> = cut.iter().copied().filter(|b| *b != 0).collect();
    let raw = String::from_utf8_lossy(&kept).into_owned();
    let text = raw.trim_end_matches(['\r', '\n']);
    let mut record = SmiRecord {
        raw: text.to_owned(),
        ..SmiRecord::default()
    };
    if line.len() > MAX_RECORD_BYTES {
        record.unparsed = Some(format!(
            "longer than a record of the channel ({} bytes; at most {MAX_RECORD_BYTES})",
            line.len()
        ));
        return record;
    }
    let (id_text, body) = text.split_once(' ').unwrap_or((text, ""));
    let Some(id) = hex_u32(id_text) else {
        record.unparsed = Some(format!("`{id_text}` is no hex event id"));
        return record;
    };
    record.event_id = Some(id);
    match parse_body(id, body, &mut record) {
        Some(kind) => record.kind = kind,
        None => {
            record.kind = SmiEventKind::Unknown;
            if record.unparsed.is_none() {
                record.unparsed = Some(format!("event {id:x}: body not of a known form"));
            }
            // Nothing half-parsed stays: an unknown record says only what it is.
            record = SmiRecord {
                event_id: record.event_id,
                raw: record.raw,
                unparsed: record.unparsed,
                ..SmiRecord::default()
            };
        }
    }
    record
}

fn parse_body(id: u32, body: &str, r: &mut SmiRecord) -> Option<SmiEventKind> {
    use SmiEventKind as K;
    match id {
        1 => {
            // `PID:COMM`, pid in hex; a comm may hold spaces and colons.
            let (pid, comm) = body.split_once(':')?;
            r.pid = Some(hex_u32(pid)?);
            r.comm = Some(comm.to_owned());
            Some(K::VmFault)
        }
        2 => {
            let (bitmask, counter) = body.split_once(':')?;
            r.bitmask = Some(hex_u64(bitmask)?);
            r.count = Some(hex_u64(counter)?);
            Some(K::ThermalThrottle)
        }
        3 | 4 => {
            // `SEQ CAUSE` (the cause may hold spaces), `SEQ ` on post-reset, `SEQ` before causes.
            let (seq, cause) = body.split_once(' ').unwrap_or((body, ""));
            r.reset_seq = Some(hex_u32(seq)?);
            if body.contains(' ') {
                r.reset_cause = Some(cause.to_owned());
            }
            Some(if id == 3 {
                K::GpuPreReset
            } else {
                K::GpuPostReset
            })
        }
        5 => {
            let (ns, pid, f) = ns_pid(body)?;
            let [at, arrow_text, locations, trigger] = f.as_slice() else {
                return None;
            };
            let (prefetch, preferred) = locations.split_once(':')?;
            hex_u32(prefetch)?;
            hex_u32(preferred)?;
            migration(r, ns, pid, at, arrow_text, trigger)?;
            Some(K::MigrateStart)
        }
        6 => {
            let (ns, pid, f) = ns_pid(body)?;
            let (at, arrow_text, trigger, error) = match f.as_slice() {
                [at, arrow_text, trigger, error] => (at, arrow_text, trigger, Some(error)),
                [at, arrow_text, trigger] => (at, arrow_text, trigger, None),
                _ => return None,
            };
            migration(r, ns, pid, at, arrow_text, trigger)?;
            if let Some(error) = error {
                r.error_code = Some(error.parse().ok()?);
            }
            Some(K::MigrateEnd)
        }
        7 | 8 => {
            let (ns, pid, f) = ns_pid(body)?;
            let [at, flag] = f.as_slice() else {
                return None;
            };
            // The parenthesised value is the gpu_id here, not a size.
            let (address, node) = at_paren(at)?;
            let flag = one_char(flag)?;
            let allowed: &[char] = if id == 7 { &['R', 'W'] } else { &['M', 'U'] };
            if !allowed.contains(&flag) {
                return None;
            }
            set_ns_pid(r, ns, pid);
            r.address_pages = Some(address);
            r.gpu_id = Some(u32::try_from(node).ok()?);
            r.flag = Some(flag);
            Some(if id == 7 {
                K::PageFaultStart
            } else {
                K::PageFaultEnd
            })
        }
        9 => {
            let (ns, pid, f) = ns_pid(body)?;
            let [node, trigger] = f.as_slice() else {
                return None;
            };
            set_ns_pid(r, ns, pid);
            r.gpu_id = Some(hex_u32(node)?);
            r.trigger = Some(trigger_name(&EVICTION_TRIGGERS, trigger)?);
            Some(K::QueueEviction)
        }
        0xa => {
            let (ns, pid, f) = ns_pid(body)?;
            // `NODE R|0`, `NODE ` (6.12's NUL, already dropped) or `NODE` (before 6.12).
            let (node, rescheduled) = match f.as_slice() {
                [node] => (node, None),
                [node, ""] => (node, None),
                [node, flag] => (node, Some(one_char(flag)?)),
                _ => return None,
            };
            set_ns_pid(r, ns, pid);
            r.gpu_id = Some(hex_u32(node)?);
            match rescheduled {
                Some('R') => r.flag = Some('R'),
                Some('0') | None => {}
                Some(_) => return None,
            }
            Some(K::QueueRestore)
        }
        0xb => {
            let (ns, pid, f) = ns_pid(body)?;
            let [at, node, trigger] = f.as_slice() else {
                return None;
            };
            let (address, size) = at_paren(at)?;
            set_ns_pid(r, ns, pid);
            r.address_pages = Some(address);
            r.size_pages = Some(size);
            r.gpu_id = Some(hex_u32(node)?);
            r.trigger = Some(trigger_name(&UNMAP_TRIGGERS, trigger)?);
            Some(K::UnmapFromGpu)
        }
        0xc | 0xd => {
            // DROPPED of a 2024 staging build: `NS -PID COUNT`, all decimal.
            if id == 0xc
                && let Some((ns, pid, f)) = ns_pid(body)
                && let [count] = f.as_slice()
                && let Ok(count) = count.parse()
            {
                set_ns_pid(r, ns, pid);
                r.count = Some(count);
                return Some(K::DroppedEvents);
            }
            let (pid, comm) = body.split_once(' ')?;
            r.pid = Some(hex_u32(pid)?);
            r.comm = Some(comm.to_owned());
            Some(if id == 0xc {
                K::ProcessStart
            } else {
                K::ProcessEnd
            })
        }
        _ => {
            r.unparsed = Some(format!("event id {id:x} is not one this parser knows"));
            None
        }
    }
}

/// What MIGRATE_START and MIGRATE_END share: `@ADDR(SIZE) FROM->TO` and the trigger.
fn migration(
    r: &mut SmiRecord,
    ns: u64,
    pid: u32,
    at: &str,
    arrow_text: &str,
    trigger: &str,
) -> Option<()> {
    let (address, size) = at_paren(at)?;
    let (from, to) = arrow(arrow_text)?;
    set_ns_pid(r, ns, pid);
    r.address_pages = Some(address);
    r.size_pages = Some(size);
    r.from_gpu_id = Some(from);
    r.to_gpu_id = Some(to);
    r.trigger = Some(trigger_name(&MIGRATE_TRIGGERS, trigger)?);
    Some(())
}

fn set_ns_pid(r: &mut SmiRecord, ns: u64, pid: u32) {
    r.boottime_ns = Some(ns);
    r.pid = Some(pid);
}

/// A line of a saved file that is a record of the channel in a form this parser knows (a
/// record kept raw is no evidence that the line is one: text of a log may look like `1 2`).
/// Cheap for the lines of a kernel log, which begin otherwise.
pub fn parse_saved_line(line: &str) -> Option<SmiRecord> {
    let bytes = line.as_bytes();
    let id_len = bytes.iter().position(|b| *b == b' ')?;
    if !(1..=2).contains(&id_len)
        || line.len() > MAX_RECORD_BYTES
        || !bytes[..id_len].iter().all(u8::is_ascii_hexdigit)
    {
        return None;
    }
    let record = parse_record(bytes);
    (record.kind != SmiEventKind::Unknown).then_some(record)
}

/// Cuts records out of reads of the anon fd: a record cut by a read is completed by the next,
/// and several records in one read come out one by one. Splits on `\n` only (a 6.12 record
/// holds a NUL before its newline).
#[derive(Debug, Default)]
pub struct RecordSplitter {
    partial: Vec<u8>,
    /// Bytes dropped because a line ran past any record's size without a newline.
    pub overlong_bytes: u64,
}

impl RecordSplitter {
    /// The whole records `bytes` completes, in order.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<SmiRecord> {
        let mut records = Vec::new();
        let mut rest = bytes;
        while let Some(end) = memchr::memchr(b'\n', rest) {
            let (line, after) = rest.split_at(end);
            rest = &after[1..];
            if self.partial.is_empty() {
                records.push(parse_record(line));
            } else {
                self.partial.extend_from_slice(line);
                records.push(parse_record(&self.partial));
                self.partial.clear();
            }
        }
        self.partial.extend_from_slice(rest);
        // A tail longer than four records without a newline is no record: keep its head raw.
        if self.partial.len() > MAX_RECORD_BYTES * 4 {
            self.overlong_bytes += self.partial.len() as u64;
            records.push(parse_record(&self.partial));
            self.partial.clear();
        }
        records
    }

    /// What is left when the fd closed: a record without its newline, if any.
    pub fn finish(&mut self) -> Option<SmiRecord> {
        if self.partial.is_empty() {
            return None;
        }
        let record = parse_record(&self.partial);
        self.partial.clear();
        Some(record)
    }
}
