//! DPM clocks (`pp_dpm_*`), performance level and busy percentages of a card.

use std::collections::BTreeMap;
use std::path::Path;

use super::{Reader, clip, parse_number};
use nodectl_model::snapshot::{ClockSample, DpmLevel};

/// The clock domains read besides sclk (which [`read`] takes with every sample), by file `pp_dpm_<domain>`.
pub const OTHER_DOMAINS: [&str; 3] = ["mclk", "fclk", "socclk"];

/// Parses a `pp_dpm_*` file: one `"<index>: <n>Mhz[ *]"` line per level. The index may be
/// `S` (deep sleep); APUs print 2 or 3 lines (min, current, max).
pub fn parse_dpm_levels(text: &str) -> Result<Vec<DpmLevel>, String> {
    let mut levels = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let bad = |why: &str| format!("line {}: {why}: {:?}", number + 1, clip(line));
        let (index, rest) = line.split_once(':').ok_or_else(|| bad("no `index:`"))?;
        let index = index.trim();
        if index.is_empty() || !index.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(bad("bad level index"));
        }
        let mut words = rest.split_whitespace();
        let clock = words.next().ok_or_else(|| bad("no clock"))?;
        let digits_end = clock
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(clock.len());
        let (digits, unit) = clock.split_at(digits_end);
        if !unit.eq_ignore_ascii_case("mhz") {
            return Err(bad("clock not in Mhz"));
        }
        let mhz = digits.parse::<u32>().map_err(|_| bad("bad clock value"))?;
        let current = match words.next() {
            None => false,
            Some("*") => true,
            Some(_) => return Err(bad("unexpected text after the clock")),
        };
        if words.next().is_some() {
            return Err(bad("unexpected text after the clock"));
        }
        levels.push(DpmLevel {
            index: index.to_owned(),
            mhz,
            current,
        });
    }
    Ok(levels)
}

/// The current level's clock, and whether it is the lowest numbered level (deep sleep aside).
pub fn current_and_lowest(levels: &[DpmLevel]) -> (Option<u32>, bool) {
    let current = levels.iter().find(|l| l.current);
    let lowest = levels
        .iter()
        .filter(|l| l.index != "S")
        .map(|l| l.mhz)
        .min();
    match current {
        None => (None, false),
        // Deep sleep is below the lowest level: it counts as sitting at the bottom.
        Some(l) if l.index == "S" => (Some(l.mhz), true),
        Some(l) => (Some(l.mhz), lowest.is_some_and(|min| l.mhz <= min)),
    }
}

/// Every `pp_dpm_<domain>` of [`OTHER_DOMAINS`] that exists, by domain.
pub fn collect_dpm(reader: &mut Reader<'_>, device: &Path) -> BTreeMap<String, Vec<DpmLevel>> {
    let mut out = BTreeMap::new();
    for domain in OTHER_DOMAINS {
        let path = device.join(format!("pp_dpm_{domain}"));
        if let Some(levels) = reader.parsed(&path, parse_dpm_levels) {
            out.insert(domain.to_owned(), levels);
        }
    }
    out
}

/// One reading of what moves: busy %, sclk and performance level.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reading {
    pub gpu_busy_percent: Option<u32>,
    pub mem_busy_percent: Option<u32>,
    pub sclk: Option<Vec<DpmLevel>>,
    pub performance_level: Option<String>,
}

pub fn read(reader: &mut Reader<'_>, device: &Path) -> Reading {
    Reading {
        gpu_busy_percent: reader.parsed(&device.join("gpu_busy_percent"), parse_number::<u32>),
        mem_busy_percent: reader.parsed(&device.join("mem_busy_percent"), parse_number::<u32>),
        sclk: reader.parsed(&device.join("pp_dpm_sclk"), parse_dpm_levels),
        performance_level: reader.line(&device.join("power_dpm_force_performance_level")),
    }
}

impl Reading {
    pub fn sample(&self, offset_ms: u64) -> ClockSample {
        let (sclk_mhz, sclk_at_lowest_level) = self
            .sclk
            .as_deref()
            .map(current_and_lowest)
            .unwrap_or((None, false));
        ClockSample {
            offset_ms,
            gpu_busy_percent: self.gpu_busy_percent,
            sclk_mhz,
            sclk_at_lowest_level,
            performance_level: self.performance_level.clone(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn level(index: &str, mhz: u32, current: bool) -> DpmLevel {
        DpmLevel {
            index: index.into(),
            mhz,
            current,
        }
    }

    #[test]
    fn dgpu_levels_with_trailing_spaces() {
        let levels = parse_dpm_levels("0: 852Mhz *\n1: 991Mhz \n2: 1084Mhz \n").unwrap();
        assert_eq!(
            levels,
            [
                level("0", 852, true),
                level("1", 991, false),
                level("2", 1084, false)
            ]
        );
        assert_eq!(current_and_lowest(&levels), (Some(852), true));
    }

    #[test]
    fn apu_three_line_form_has_the_live_clock_in_the_middle() {
        let levels = parse_dpm_levels("0: 600Mhz\n1: 1453Mhz *\n2: 2900Mhz\n").unwrap();
        assert_eq!(levels[1], level("1", 1453, true));
        assert_eq!(current_and_lowest(&levels), (Some(1453), false));
    }

    #[test]
    fn apu_two_line_form_at_the_floor() {
        let levels = parse_dpm_levels("0: 600Mhz *\n1: 2900Mhz\n").unwrap();
        assert_eq!(current_and_lowest(&levels), (Some(600), true));
    }

    #[test]
    fn deep_sleep_line() {
        let levels = parse_dpm_levels("S: 19Mhz *\n0: 600Mhz\n1: 2900Mhz\n").unwrap();
        assert_eq!(levels[0], level("S", 19, true));
        assert_eq!(current_and_lowest(&levels), (Some(19), true));
    }

    #[test]
    fn malformed_lines_name_the_line() {
        assert_eq!(
            parse_dpm_levels("0: 600Mhz *\n1: fast\n"),
            Err("line 2: clock not in Mhz: \"1: fast\"".to_owned())
        );
        assert!(parse_dpm_levels("0: 2.5GT/s, x8 *").is_err());
        assert!(parse_dpm_levels("garbage").is_err());
        assert_eq!(parse_dpm_levels(""), Ok(vec![]));
    }

    proptest::proptest! {
        #[test]
        fn dpm_parser_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let _ = parse_dpm_levels(&String::from_utf8_lossy(&bytes));
        }

        #[test]
        fn dpm_parser_survives_mutations(pos in 0usize..40, byte in proptest::num::u8::ANY) {
            let mut bytes = b"S: 19Mhz *\n0: 600Mhz\n1: 1453Mhz *\n2: 2900Mhz\n".to_vec();
            let at = pos % bytes.len();
            bytes[at] = byte;
            let _ = parse_dpm_levels(&String::from_utf8_lossy(&bytes));
        }
    }
}
