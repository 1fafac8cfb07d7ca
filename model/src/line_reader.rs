//! Cuts a stream into lines out of the reader's own buffer: whole lines of a read handed over at once (valid UTF-8 checked in one pass), a line that spans reads carried and bounded; one reader for saved kernel logs and llama.cpp logs alike.

use std::io::BufRead;
use std::ops::ControlFlow;

/// How much of a saved log one read takes. Reads much longer than a line keep the lines that
/// span two reads (and are copied) rare; reads larger than the CPU's cache cost more in the
/// kernel's copy than they save in calls: on the 2-vCPU EPYC host of BENCHMARKS.md, reading a
/// 60 MB log 256 KiB or 1 MiB at a time took three times the system time of 128 KiB reads.
pub const READ_BUFFER_BYTES: usize = 128 * 1024;

/// One line that could not be handed over as part of a valid UTF-8 run: invalid UTF-8, or a
/// line that spanned reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawLine<'a> {
    /// Without its `\n`.
    pub bytes: &'a [u8],
    /// The line was longer than the reader's bound and was cut there.
    pub cut: bool,
}

/// What receives the lines.
pub trait LineSink {
    /// A run of whole lines that is valid UTF-8, each ending in `\n`. The default hands each
    /// line (without its `\n`) to [`LineSink::text_line`]; a sink may look at the run at once
    /// (one search over it instead of one per line).
    fn text_lines(&mut self, text: &str) -> ControlFlow<()> {
        let mut from = 0;
        for end in memchr::memchr_iter(b'\n', text.as_bytes()) {
            // `\n` is one byte of UTF-8, so both ends are char boundaries.
            self.text_line(text.get(from..end).unwrap_or_default())?;
            from = end + 1;
        }
        ControlFlow::Continue(())
    }

    /// One line of valid UTF-8, without its `\n` (of any length: a run is not bounded).
    fn text_line(&mut self, line: &str) -> ControlFlow<()>;

    /// One line as bytes (see [`RawLine`]).
    fn raw_line(&mut self, line: RawLine<'_>) -> ControlFlow<()>;
}

/// Reads `reader` to its end (or until the sink breaks), a line at a time. A line that spans
/// reads is kept up to `max_line_bytes` and marked cut beyond; a last line without `\n` is a
/// line. An interrupted read is retried; any other error ends the reading with it.
pub fn read_lines(
    mut reader: impl BufRead,
    max_line_bytes: usize,
    sink: &mut impl LineSink,
) -> std::io::Result<()> {
    // The start of a line the last read ended inside, and whether it is already cut.
    let mut carried: Vec<u8> = Vec::new();
    let mut carried_cut = false;
    let carry = |carried: &mut Vec<u8>, cut: &mut bool, piece: &[u8]| {
        let room = max_line_bytes.saturating_sub(carried.len());
        *cut |= piece.len() > room;
        carried.extend_from_slice(&piece[..piece.len().min(room)]);
    };
    loop {
        let buffer = match reader.fill_buf() {
            Ok(buffer) => buffer,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buffer.is_empty() {
            break;
        }
        let read = buffer.len();
        let mut start = 0;
        if !carried.is_empty() || carried_cut {
            let Some(end) = memchr::memchr(b'\n', buffer) else {
                carry(&mut carried, &mut carried_cut, buffer);
                reader.consume(read);
                continue;
            };
            carry(&mut carried, &mut carried_cut, &buffer[..end]);
            let flow = sink.raw_line(RawLine {
                bytes: &carried,
                cut: carried_cut,
            });
            carried.clear();
            carried_cut = false;
            start = end + 1;
            if flow.is_break() {
                return Ok(());
            }
        }
        let whole = memchr::memrchr(b'\n', &buffer[start..]).map_or(start, |n| start + n + 1);
        let region = &buffer[start..whole];
        let flow = match std::str::from_utf8(region) {
            Ok(text) => sink.text_lines(text),
            Err(_) => {
                let mut flow = ControlFlow::Continue(());
                let mut from = 0;
                for end in memchr::memchr_iter(b'\n', region) {
                    flow = sink.raw_line(RawLine {
                        bytes: &region[from..end],
                        cut: false,
                    });
                    if flow.is_break() {
                        break;
                    }
                    from = end + 1;
                }
                flow
            }
        };
        carry(&mut carried, &mut carried_cut, &buffer[whole..]);
        reader.consume(read);
        if flow.is_break() {
            return Ok(());
        }
    }
    if !carried.is_empty() || carried_cut {
        let _ = sink.raw_line(RawLine {
            bytes: &carried,
            cut: carried_cut,
        });
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Collect(Vec<(String, bool)>);

    impl LineSink for Collect {
        fn text_line(&mut self, line: &str) -> ControlFlow<()> {
            self.0.push((line.to_owned(), false));
            ControlFlow::Continue(())
        }
        fn raw_line(&mut self, line: RawLine<'_>) -> ControlFlow<()> {
            self.0
                .push((String::from_utf8_lossy(line.bytes).into_owned(), line.cut));
            ControlFlow::Continue(())
        }
    }

    fn lines(input: &[u8], buffer: usize, max: usize) -> Vec<(String, bool)> {
        let mut sink = Collect::default();
        read_lines(
            std::io::BufReader::with_capacity(buffer, input),
            max,
            &mut sink,
        )
        .unwrap();
        sink.0
    }

    #[test]
    fn lines_across_reads_invalid_utf8_long_lines_and_a_last_line_without_newline() {
        let input = b"first\nsecond line\n\xff bad\nlong long long long\nlast";
        let expected = vec![
            ("first".to_owned(), false),
            ("second line".to_owned(), false),
            ("\u{fffd} bad".to_owned(), false),
            ("long long long long".to_owned(), false),
            ("last".to_owned(), false),
        ];
        for buffer in [1, 3, 7, 64] {
            assert_eq!(lines(input, buffer, 100), expected, "buffer {buffer}");
        }
        // A line spanning reads is bounded and marked.
        let cut = lines(b"0123456789abcdef\nok\n", 4, 8);
        assert_eq!(cut[0], ("01234567".to_owned(), true));
        assert_eq!(cut[1], ("ok".to_owned(), false));
    }

    proptest::proptest! {
        #[test]
        fn every_byte_is_in_a_line_whatever_the_reads(
            input in proptest::collection::vec(proptest::num::u8::ANY, 0..300),
            buffer in 1usize..40,
        ) {
            let got = lines(&input, buffer, usize::MAX);
            let expected: Vec<String> = if input.is_empty() {
                Vec::new()
            } else {
                let text = input.strip_suffix(b"\n").unwrap_or(&input);
                text.split(|b| *b == b'\n').map(|l| String::from_utf8_lossy(l).into_owned()).collect()
            };
            let got: Vec<String> = got.into_iter().map(|(l, _)| l).collect();
            proptest::prop_assert_eq!(got, expected);
        }
    }
}
