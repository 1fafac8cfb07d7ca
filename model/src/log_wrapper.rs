//! The wrappers a saved log's lines come in whatever wrote them (journald and syslog short and short-precise in any locale, journald short-iso, `kubectl logs --timestamps`, `docker compose logs`), taken off with their wall time: one reader for kernel logs and llama.cpp logs alike.

/// Month abbreviations as `journalctl` and syslog print them in the C locale and the common
/// others (`LC_TIME`): lower case, without a trailing dot. Index + 1 is the month.
const MONTHS: [&[&str]; 12] = [
    &["jan", "janv", "ene", "gen", "sty", "led", "янв"],
    &["feb", "févr", "fév", "fev", "lut", "úno", "фев"],
    &["mar", "mär", "mrz", "mars", "mrt", "bře", "мар"],
    &["apr", "avr", "abr", "kwi", "dub", "апр"],
    &["may", "mai", "mag", "maj", "mei", "kvě", "май", "мая"],
    &["jun", "juin", "giu", "cze", "čvn", "июн"],
    &["jul", "juil", "lug", "lip", "čvc", "июл"],
    &["aug", "août", "ago", "sie", "srp", "авг"],
    &["sep", "sept", "set", "wrz", "zář", "сен"],
    &["oct", "okt", "ott", "out", "paź", "říj", "окт"],
    &["nov", "lis", "ноя"],
    &["dec", "déc", "dic", "dez", "gru", "pro", "дек"],
];

/// The month a (possibly localised) abbreviation names.
fn month_number(word: &str) -> Option<i8> {
    // Compared lower-cased as it goes: this runs on every journal line.
    let word = word.trim_end_matches('.');
    let index = MONTHS.iter().position(|names| {
        names
            .iter()
            .any(|name| name.chars().eq(word.chars().flat_map(char::to_lowercase)))
    })?;
    i8::try_from(index + 1).ok()
}

/// The year of journalctl and syslog lines, which print none: that of the first dated line,
/// then, from line to line, the one that puts each line nearest the line before, so a log that
/// crosses New Year (`Dec 31 23:59:59` then `Jan 01 00:00:01`) keeps its times increasing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JournalYear {
    year: i16,
    /// Today's date, while the year of the first dated line is still to be chosen from it.
    today: Option<jiff::civil::Date>,
    /// The month of the last dated line.
    month: Option<i8>,
}

impl JournalYear {
    /// `year` is the year of the first dated line (`--year`).
    pub fn given(year: i16) -> Self {
        JournalYear {
            year,
            today: None,
            month: None,
        }
    }

    /// The first dated line is given the latest year that does not put it after `today`: this
    /// year, or last year for a date still to come (a December log read in January). The year
    /// must be known at the first line, since events are printed as they are read; a log that
    /// spans more than a year from its first line is not told apart from a shorter one.
    pub fn before(today: jiff::civil::Date) -> Self {
        JournalYear {
            year: today.year(),
            today: Some(today),
            month: None,
        }
    }

    /// `--year` when given, else [`JournalYear::before`] today.
    pub fn given_or_today(year: Option<i16>) -> Self {
        match year {
            Some(year) => JournalYear::given(year),
            None => JournalYear::before(jiff::ZonedDateTime::now().date()),
        }
    }

    /// The year of a line dated `month`/`day` (1-based), given the lines before it.
    fn of(&mut self, month: i8, day: i8) -> i16 {
        if let Some(today) = self.today.take() {
            // Journal times are local time; one that is up to a day ahead of today (UTC) is
            // still today somewhere.
            let limit = today.tomorrow().unwrap_or(today);
            if limit.year() == today.year() && (month, day) > (limit.month(), limit.day()) {
                self.year = self.year.saturating_sub(1);
            }
        } else if let Some(last) = self.month
            && last != month
        {
            // Months forward from the last line's: up to six is time going on (past December
            // into a new year), more is a step back (a clock set back across New Year).
            let forward = (month - last).rem_euclid(12);
            if forward <= 6 && month < last {
                self.year = self.year.saturating_add(1);
            } else if forward > 6 && month > last {
                self.year = self.year.saturating_sub(1);
            }
        }
        self.month = Some(month);
        self.year
    }
}

/// A journal or syslog line taken apart: when, who wrote it, and what.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JournalLine<'a> {
    /// `None` for a month name no locale here knows: still a journal line, without its time.
    pub wall: Option<jiff::Timestamp>,
    /// `kernel`, or `name[pid]`.
    pub ident: &'a str,
    pub message: &'a str,
}

/// journalctl short / short-precise and syslog files: `Aug 05 09:03:24[.804673] host
/// ident[pid]: message`; the day may be space-padded (`Aug  5`), the month in another language
/// (`maj`, `févr.`, `окт`). Journal times are local time, read as UTC.
pub fn journal_short<'l>(line: &'l str, years: &mut JournalYear) -> Option<JournalLine<'l>> {
    let (month, rest) = line.split_once(' ')?;
    if month.is_empty()
        || month.chars().count() > 5
        || !month.chars().all(|c| c.is_alphabetic() || c == '.')
    {
        return None;
    }
    let (day, rest) = rest.trim_start_matches(' ').split_once(' ')?;
    if day.is_empty() || day.len() > 2 || !day.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (time, rest) = rest.split_once(' ')?;
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let clock = jiff::civil::Time::strptime("%H:%M:%S", hms).ok()?;
    let micros = if frac.is_empty() {
        0
    } else {
        i64::try_from(fraction_usec(frac)?).ok()?
    };
    let (ident, message) = host_ident_message(rest)?;
    let mut wall = None;
    if let Some(month) = month_number(month)
        && let Ok(day) = day.parse::<i8>()
        && let Ok(date) = jiff::civil::Date::new(years.of(month, day), month, day)
        && let Ok(zoned) = date
            .to_datetime(clock)
            .to_zoned_datetime(jiff::tz::TimeZone::UTC)
    {
        wall = zoned
            .timestamp()
            .checked_add(jiff::SignedDuration::from_micros(micros))
            .ok();
    }
    Some(JournalLine {
        wall,
        ident,
        message,
    })
}

/// journalctl short-iso (and RFC 3339 syslog): `2025-08-05T09:03:24+0200 host ident[pid]: …`.
pub fn journal_iso(line: &str) -> Option<JournalLine<'_>> {
    let (wall, rest) = rfc3339_head(line)?;
    let (ident, message) = host_ident_message(rest)?;
    Some(JournalLine {
        wall: Some(wall),
        ident,
        message,
    })
}

/// `2025-08-05T09:03:24.804673Z rest` (kubectl's `--timestamps`, journald's short-iso) →
/// (time, rest).
pub fn rfc3339_head(line: &str) -> Option<(jiff::Timestamp, &str)> {
    let bytes = line.as_bytes();
    if bytes.len() < 20 || !bytes[..4].iter().all(u8::is_ascii_digit) || bytes[4] != b'-' {
        return None;
    }
    let (stamp, rest) = line.split_once(' ')?;
    Some((stamp.parse().ok()?, rest))
}

/// The longest service column `docker compose logs` pads: compose names longer than this are
/// rare, and a line is only searched this far for the `|`.
const MAX_COMPOSE_SERVICE_BYTES: usize = 64;

/// `docker compose logs`' `SERVICE   | text` → text: a service name (letters, digits, `_`,
/// `.`, `-`) padded with spaces, then `| `. llama.cpp's own lines hold `|` too (`id  0 | task`),
/// but never after a single word and spaces only.
pub fn compose_service_text(line: &str) -> Option<&str> {
    compose_service(line).map(|line| line.text)
}

/// A line of `docker compose logs`, its column taken apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ComposeLine<'l> {
    /// The service (or container) name the column shows.
    pub service: &'l str,
    /// The program's own line.
    pub text: &'l str,
}

/// `docker compose logs`' `SERVICE   | text` taken apart, as [`compose_service_text`].
pub fn compose_service(line: &str) -> Option<ComposeLine<'_>> {
    let bytes = line.as_bytes();
    // Cheapest test first, as this runs on every line: the first space must be followed by
    // spaces and the bar (a llama.cpp line fails at the byte after its stamp).
    let head = bytes.get(..=MAX_COMPOSE_SERVICE_BYTES).unwrap_or(bytes);
    let name_end = memchr::memchr(b' ', head)?;
    let padding = bytes[name_end..].iter().position(|&b| b != b' ')?;
    let bar = name_end + padding;
    if bytes[bar] != b'|' {
        return None;
    }
    let name = &bytes[..name_end];
    let is_name_byte = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-');
    if name.is_empty() || !name.iter().all(is_name_byte) {
        return None;
    }
    let text = match &line[bar + 1..] {
        "" => "",
        rest => rest.strip_prefix(' ')?,
    };
    Some(ComposeLine {
        service: &line[..name_end],
        text,
    })
}

/// `host ident[pid]: message` → (ident, message), when it has that shape.
pub fn host_ident_message(rest: &str) -> Option<(&str, &str)> {
    let (_host, after) = rest.split_once(' ')?;
    // The ident runs to the first `:` and holds no space; most messages fail here at once.
    let end = after.find([':', ' '])?;
    let (ident, tail) = after.split_at(end);
    let message = match tail.strip_prefix(':')? {
        // A kernel line with an empty message.
        "" => "",
        tail => tail.strip_prefix(' ')?,
    };
    (!ident.is_empty()).then_some((ident, message))
}

/// The digits of a stamp as a number, read by hand: every dmesg line has one.
pub fn digits(part: &str) -> Option<u64> {
    part.bytes().try_fold(0u64, |n, b| {
        b.is_ascii_digit()
            .then(|| n.checked_mul(10)?.checked_add(u64::from(b - b'0')))
            .flatten()
    })
}

/// `804673` (the digits after a seconds' dot, at most 9) → µs.
pub fn fraction_usec(frac: &str) -> Option<u64> {
    if frac.len() > 9 {
        return None;
    }
    digits(frac)?;
    // The first six digits, padded with zeros.
    let micros_digits = frac.get(..frac.len().min(6))?;
    let mut micros = digits(micros_digits)?;
    for _ in micros_digits.len()..6 {
        micros *= 10;
    }
    Some(micros)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_journal_line_of_a_program_keeps_its_time_and_ident() {
        let line = journal_short(
            "Dec 01 14:30:00.250 node1 llama-server[4242]: srv  load_model: loading model",
            &mut JournalYear::given(2026),
        )
        .unwrap();
        assert_eq!(line.wall.unwrap().to_string(), "2026-12-01T14:30:00.25Z");
        assert_eq!(line.ident, "llama-server[4242]");
        assert_eq!(line.message, "srv  load_model: loading model");
        let iso = journal_iso("2026-12-01T14:30:00+0100 node1 llama-server[4242]: hello").unwrap();
        assert_eq!(iso.wall.unwrap().to_string(), "2026-12-01T13:30:00Z");
        assert_eq!(iso.message, "hello");
        assert!(journal_short("0.00.000.512 I srv  x", &mut JournalYear::given(2026)).is_none());
    }

    #[test]
    fn a_compose_service_column_is_taken_off_and_llama_cpp_bars_are_not() {
        assert_eq!(
            compose_service_text(
                "llama-cpp       | [34255] 0.07.631.810 I slot get_availabl: id  1 | task -1"
            ),
            Some("[34255] 0.07.631.810 I slot get_availabl: id  1 | task -1")
        );
        assert_eq!(compose_service_text("llama-server-1  |"), Some(""));
        for not_compose in [
            "0.07.631.810 I slot get_availabl: id  1 | task -1 | selected slot by LRU",
            "slot launch_slot_: id  0 | task 0 | processing task",
            "llama_memory_breakdown_print: |   - ROCm0 (gfx1151) | 98304 = ",
            "system_info: n_threads = 12 (n_threads_batch = 12) / 24 | ROCm : NO_VMM = 1 |",
            " | leading bar",
            "name |no space after the bar",
        ] {
            assert_eq!(compose_service_text(not_compose), None, "{not_compose}");
        }
    }

    proptest::proptest! {
        #[test]
        fn never_panics(line in "\\PC{0,120}") {
            let _ = journal_short(&line, &mut JournalYear::given(2026));
            let _ = compose_service_text(&line);
            let _ = journal_iso(&line);
        }
    }
}
