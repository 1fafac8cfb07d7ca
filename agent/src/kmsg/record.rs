//! Parses one `/dev/kmsg` record: `prio,seq,usec,flags[,…];message` plus ` KEY=value` dictionary lines.

/// One kernel log record as `/dev/kmsg` gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Syslog facility: 0 is the kernel; anything else was written by user space.
    pub facility: u32,
    /// Syslog level, 0 (emerg) … 7 (debug).
    pub level: u8,
    pub seq: u64,
    /// CLOCK_MONOTONIC µs since boot.
    pub ts_usec: u64,
    /// `\xNN` escapes decoded (invalid UTF-8 replaced).
    pub message: String,
    /// `SUBSYSTEM=` dictionary entry.
    pub subsystem: Option<String>,
    /// `DEVICE=` dictionary entry, e.g. `+pci:0000:c1:00.0`.
    pub device: Option<String>,
}

impl Record {
    /// User space wrote this record (facility ≠ 0): it never counts as a kernel event.
    pub fn user_written(&self) -> bool {
        self.facility != 0
    }
}

/// Why bytes are not a kmsg record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("no `;` between header and message")]
    NoSeparator,
    #[error("header `{0}`: expected prio,seq,usec,flags")]
    Header(String),
}

fn field<T: std::str::FromStr>(part: Option<&[u8]>, header: &[u8]) -> Result<T, RecordError> {
    part.and_then(|p| std::str::from_utf8(p).ok())
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| RecordError::Header(String::from_utf8_lossy(header).into_owned()))
}

/// Parses one record (the bytes of one `read()`). Total: never panics.
pub fn parse_record(bytes: &[u8]) -> Result<Record, RecordError> {
    let RecordHeader {
        prio,
        seq,
        ts_usec,
        message_at,
    } = parse_header(bytes)?;
    let rest = &bytes[message_at..];
    let mut lines = rest.split(|&b| b == b'\n');
    let message = unescape(lines.next().unwrap_or_default());
    let mut subsystem = None;
    let mut device = None;
    for line in lines {
        let Some(entry) = line.strip_prefix(b" ") else {
            continue;
        };
        let entry = unescape(entry);
        if let Some((key, value)) = entry.split_once('=') {
            match key {
                "SUBSYSTEM" => subsystem = Some(value.to_owned()),
                "DEVICE" => device = Some(value.to_owned()),
                _ => {}
            }
        }
    }
    Ok(Record {
        facility: prio >> 3,
        level: u8::try_from(prio & 7).unwrap_or(7),
        seq,
        ts_usec,
        message,
        subsystem,
        device,
    })
}

/// A record's `prio,seq,usec,flags;` and where its message starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    pub prio: u32,
    pub seq: u64,
    pub ts_usec: u64,
    pub message_at: usize,
}

/// The header of a record; a record is valid exactly when its header is.
pub fn parse_header(bytes: &[u8]) -> Result<RecordHeader, RecordError> {
    let semi = memchr::memchr(b';', bytes).ok_or(RecordError::NoSeparator)?;
    let header = &bytes[..semi];
    let mut parts = header.split(|&b| b == b',');
    let prio: u32 = field(parts.next(), header)?;
    let seq: u64 = field(parts.next(), header)?;
    let ts_usec: u64 = field(parts.next(), header)?;
    if parts.next().is_none() {
        return Err(RecordError::Header(
            String::from_utf8_lossy(header).into_owned(),
        ));
    }
    Ok(RecordHeader {
        prio,
        seq,
        ts_usec,
        message_at: semi + 1,
    })
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes the kernel's `\xNN` escapes; anything else is kept as written.
pub fn unescape(bytes: &[u8]) -> String {
    if !bytes.contains(&b'\\') {
        return String::from_utf8_lossy(bytes).into_owned();
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && bytes.get(i + 1) == Some(&b'x')
            && let (Some(h), Some(l)) = (
                bytes.get(i + 2).copied().and_then(hex_digit),
                bytes.get(i + 3).copied().and_then(hex_digit),
            )
        {
            out.push(h << 4 | l);
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Writes a message as `/dev/kmsg` prints it: a byte below 0x20 or from 0x7f up, and the
/// backslash itself, become `\xNN` (what the kernel's `msg_print_ext_body` does), so a saved
/// record stays one line and [`unescape`] gives the message back.
pub fn escape(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for &b in message.as_bytes() {
        if !(b' '..0x7f).contains(&b) || b == b'\\' {
            out.push_str(&format!("\\x{b:02x}"));
        } else {
            out.push(char::from(b));
        }
    }
    out
}

/// PCI address of a `DEVICE=+pci:0000:c1:00.0` dictionary value.
pub fn pci_of_device(device: &str) -> Option<&str> {
    device.strip_prefix("+pci:")
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_a_record_with_its_dictionary() {
        let r = parse_record(
            b"3,1234,950818166,-;amdgpu 0000:c1:00.0: amdgpu: MES failed to respond to msg=REMOVE_QUEUE\n SUBSYSTEM=pci\n DEVICE=+pci:0000:c1:00.0\n",
        )
        .unwrap();
        assert_eq!(
            (r.facility, r.level, r.seq, r.ts_usec),
            (0, 3, 1234, 950_818_166)
        );
        assert_eq!(
            r.message,
            "amdgpu 0000:c1:00.0: amdgpu: MES failed to respond to msg=REMOVE_QUEUE"
        );
        assert_eq!(r.subsystem.as_deref(), Some("pci"));
        assert_eq!(r.device.as_deref(), Some("+pci:0000:c1:00.0"));
        assert_eq!(pci_of_device("+pci:0000:c1:00.0"), Some("0000:c1:00.0"));
        assert!(!r.user_written());
    }

    #[test]
    fn keeps_the_facility_of_user_records_and_ignores_extra_header_fields() {
        let r = parse_record(b"14,77,5,-,caller=T123;hello\n").unwrap();
        assert_eq!((r.facility, r.level, r.seq), (1, 6, 77));
        assert!(r.user_written());
        assert_eq!(r.message, "hello");
    }

    #[test]
    fn decodes_escapes_and_keeps_stray_backslashes() {
        assert_eq!(unescape(br"a\x0ab\x5cc\xZZ\"), "a\nb\\c\\xZZ\\");
        let r = parse_record(b"6,1,2,c;tab\\x09end").unwrap();
        assert_eq!(r.message, "tab\tend");
    }

    #[test]
    fn rejects_malformed_headers() {
        assert_eq!(parse_record(b"no separator"), Err(RecordError::NoSeparator));
        assert!(matches!(
            parse_record(b"x,1,2,-;m"),
            Err(RecordError::Header(_))
        ));
        assert!(matches!(
            parse_record(b"6,1,2;m"),
            Err(RecordError::Header(_))
        ));
        assert!(matches!(parse_record(b";m"), Err(RecordError::Header(_))));
    }

    #[test]
    fn escapes_as_the_kernel_prints() {
        assert_eq!(escape("a\nb\\c"), "a\\x0ab\\x5cc");
        assert_eq!(escape("µ"), "\\xc2\\xb5");
        assert_eq!(unescape(escape("a\nb\\c µ").as_bytes()), "a\nb\\c µ");
    }

    proptest! {
        #[test]
        fn unescape_undoes_escape(message in "\\PC*|[\\x00-\\x7f]{0,64}") {
            prop_assert_eq!(unescape(escape(&message).as_bytes()), message);
        }

        #[test]
        fn never_panics_on_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_record(&bytes);
            let _ = unescape(&bytes);
        }

        #[test]
        fn never_panics_on_mutated_records(
            cut in 0usize..120,
            flip in 0usize..120,
            byte in any::<u8>(),
        ) {
            let mut bytes = b"3,1234,950818166,-;amdgpu 0000:c1:00.0: ring gfx_0.0.0 timeout\\x0a\n SUBSYSTEM=pci\n DEVICE=+pci:0000:c1:00.0\n".to_vec();
            if flip < bytes.len() { bytes[flip] = byte; }
            bytes.truncate(cut.min(bytes.len()));
            let _ = parse_record(&bytes);
        }
    }
}
