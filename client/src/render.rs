//! Everything nodectl prints: the output formats (`-o table|json|yaml`), the one table style, unified diffs, and writes to standard output that end quietly when it closes.

use std::io::Write as _;

use comfy_table::{ContentArrangement, Table};
use serde::Serialize;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Human tables.
    #[default]
    Table,
    /// Pretty JSON, the stable documented shape.
    Json,
    /// The same shape as JSON, in YAML.
    Yaml,
}

/// Renders `value` as JSON or YAML; `None` for `Format::Table` (the caller draws its table).
pub fn structured<T: Serialize>(value: &T, format: Format) -> anyhow::Result<Option<String>> {
    Ok(match format {
        Format::Table => None,
        Format::Json => Some(format!("{}\n", serde_json::to_string_pretty(value)?)),
        Format::Yaml => Some(serde_saphyr::to_string(value)?),
    })
}

/// Prints `value` as JSON or YAML and returns true; false for `Format::Table`.
pub fn print_structured<T: Serialize>(value: &T, format: Format) -> anyhow::Result<bool> {
    match structured(value, format)? {
        Some(text) => {
            emit(&text)?;
            Ok(true)
        }
        None => Ok(false),
    }
}

/// Width of a table when standard output is not a terminal (a pipe, a file): `COLUMNS` when
/// set, else this; a table laid out for no width at all grew as wide as its longest message.
const PIPED_TABLE_WIDTH: u16 = 160;

/// A table in nodectl's one style: condensed UTF-8 borders, columns fitted to the terminal (or
/// to `COLUMNS`, or 160 columns when piped).
pub fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_style(comfy_table::presets::UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic);
    if !t.is_tty() {
        let width = std::env::var("COLUMNS")
            .ok()
            .and_then(|c| c.trim().parse().ok())
            .unwrap_or(PIPED_TABLE_WIDTH);
        t.set_width(width);
    }
    if !header.is_empty() {
        t.set_header(header.iter().copied());
    }
    t
}

/// [`table`] whose columns keep the width of their content (ids, times, devices must not break
/// across lines), but for those in `wrapping`, which take the rest and wrap.
pub fn table_wrapping(header: &[&str], wrapping: &[usize]) -> Table {
    use comfy_table::{ColumnConstraint, Width};
    let mut t = table(header);
    for index in 0..header.len() {
        if let Some(column) = t.column_mut(index) {
            column.set_constraint(if wrapping.contains(&index) {
                ColumnConstraint::LowerBoundary(Width::Fixed(MIN_WRAPPING_WIDTH))
            } else {
                ColumnConstraint::ContentWidth
            });
        }
    }
    t
}

/// The narrowest a wrapping column gets: narrower, a message is a column of syllables.
const MIN_WRAPPING_WIDTH: u16 = 20;

/// A unified diff of two texts (`---`/`+++` headers, 3 lines of context); empty when equal.
pub fn unified_diff(old: &str, new: &str, old_name: &str, new_name: &str) -> String {
    if old == new {
        return String::new();
    }
    similar::TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(3)
        .header(old_name, new_name)
        .to_string()
}

/// Characters of one table cell at most: a kernel message can be megabytes long, and laying out
/// a cell costs time with the square of its length.
pub const MAX_CELL_CHARS: usize = 400;

/// `text` cut to [`MAX_CELL_CHARS`] characters, with a marker saying how much was left out
/// (`-o json` keeps the whole text).
/// Control characters are escaped first, so the layout counts what is shown.
pub fn cell(text: &str) -> String {
    let text = escape_controls(text);
    match text.char_indices().nth(MAX_CELL_CHARS) {
        None => text.into_owned(),
        Some((at, _)) => format!("{}… (+{} bytes)", &text[..at], text.len() - at),
    }
}

/// `text` with every line indented by `spaces`.
pub fn indented(text: &str, spaces: usize) -> String {
    let pad = " ".repeat(spaces);
    text.lines().map(|line| format!("{pad}{line}\n")).collect()
}

/// Standard output was closed by its reader (`| head`): the command ends quietly.
#[derive(Debug, thiserror::Error)]
#[error("standard output closed")]
pub struct OutputClosed;

/// `text` with every control character but the newline escaped (`\u{1b}`, `\t`, `\r`): text
/// from a node or a saved log must never move the cursor, clear the screen or retitle the
/// terminal, nor break a table's layout. JSON and YAML escape such characters themselves.
pub fn escape_controls(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(|c| c.is_control() && c != '\n') {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if c.is_control() && c != '\n' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Writes to standard output (control characters escaped) and flushes; a closed pipe is
/// [`OutputClosed`], not a panic.
pub fn emit(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(escape_controls(text).as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(OutputClosed.into()),
        other => Ok(other?),
    }
}

/// [`emit`] with a newline.
pub fn line(text: impl AsRef<str>) -> anyhow::Result<()> {
    emit(&format!("{}\n", text.as_ref()))
}

/// `93784` → `1 d 2 h`: at most the two largest units that are not zero (seconds below a minute).
pub fn human_duration(seconds: u64) -> String {
    let units = [(86_400, "d"), (3_600, "h"), (60, "min"), (1, "s")];
    let mut parts = Vec::new();
    let mut left = seconds;
    for (size, name) in units {
        let n = left / size;
        left %= size;
        if n > 0 || (parts.is_empty() && size == 1) {
            parts.push(format!("{n} {name}"));
        }
        if parts.len() == 2 || (!parts.is_empty() && n == 0) {
            break;
        }
    }
    parts.join(" ")
}

/// `103079215104` → `96.0 GiB`.
pub fn human_bytes(bytes: u64) -> String {
    const GIB: f64 = 1024.0 * 1024.0 * 1024.0;
    const MIB: f64 = 1024.0 * 1024.0;
    let b = bytes as f64;
    if b >= GIB {
        format!("{:.1} GiB", b / GIB)
    } else {
        format!("{:.1} MiB", b / MIB)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn long_cells_are_cut_with_a_marker() {
        assert_eq!(cell("short"), "short");
        let long = "é".repeat(MAX_CELL_CHARS + 10);
        let cut = cell(&long);
        assert!(cut.ends_with("… (+20 bytes)"), "{cut}");
        assert_eq!(cut.chars().filter(|c| *c == 'é').count(), MAX_CELL_CHARS);
    }

    #[test]
    fn control_characters_are_shown_escaped() {
        assert_eq!(escape_controls("plain\ntext"), "plain\ntext");
        assert_eq!(
            escape_controls("a\u{1b}]0;title\u{7}b\u{1b}[2J\tc\r"),
            "a\\u{1b}]0;title\\u{7}b\\u{1b}[2J\\tc\\r"
        );
        assert_eq!(
            escape_controls("\u{9b}31m"),
            "\\u{9b}31m",
            "C1 controls too"
        );
    }

    #[test]
    fn diffs_and_indents() {
        assert_eq!(unified_diff("a\n", "a\n", "x", "y"), "");
        let diff = unified_diff("a\nb\n", "a\nc\n", "old", "new");
        assert!(diff.starts_with("--- old\n+++ new\n"), "{diff}");
        assert!(diff.contains("-b\n+c\n"), "{diff}");
        assert_eq!(indented("a\nb", 2), "  a\n  b\n");
    }

    #[test]
    fn yaml_and_json_have_one_shape() {
        #[derive(Serialize)]
        struct S {
            a: u32,
        }
        assert_eq!(
            structured(&S { a: 1 }, Format::Json).unwrap().unwrap(),
            "{\n  \"a\": 1\n}\n"
        );
        assert!(structured(&S { a: 1 }, Format::Table).unwrap().is_none());
        assert_eq!(
            structured(&S { a: 1 }, Format::Yaml).unwrap().unwrap(),
            "a: 1\n"
        );
    }
}
