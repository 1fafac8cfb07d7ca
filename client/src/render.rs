//! Everything nodectl prints: the output formats (`-o table|json|yaml`), the one table style, unified diffs, and writes to standard output that end quietly when it closes.

mod safe_yaml;

pub use nodectl_model::text::{
    MAX_CELL_CHARS, cell, escape_controls, human_bytes, human_duration, is_hidden,
};

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
        Format::Json => Some(format!("{}\n", json_pretty(value)?)),
        Format::Yaml => Some(yaml(value)?),
    })
}

/// Prints `value` as JSON or YAML and returns true; false for `Format::Table`.
pub fn print_structured<T: Serialize>(value: &T, format: Format) -> anyhow::Result<bool> {
    match structured(value, format)? {
        Some(text) => {
            write_stdout(text.as_bytes(), true)?;
            Ok(true)
        }
        None => Ok(false),
    }
}

/// `value` as pretty JSON in which no character that [`escape_controls`] escapes stands raw:
/// serde_json escapes C0 controls, and DEL, C1 controls and invisible characters become
/// `\u009b` escapes here (surrogate pairs beyond the BMP), so the text is safe on a terminal
/// and every value still reads back as it was.
pub fn json_pretty<T: Serialize + ?Sized>(value: &T) -> anyhow::Result<String> {
    Ok(json_escape_hidden(serde_json::to_string_pretty(value)?))
}

/// [`json_pretty`] on one line (JSON lines).
pub fn json_compact<T: Serialize + ?Sized>(value: &T) -> anyhow::Result<String> {
    Ok(json_escape_hidden(serde_json::to_string(value)?))
}

/// `value` as YAML in which no character that [`escape_controls`] escapes stands raw: a string
/// holding one is written double-quoted with it escaped (`\u202E`), so it reads back as it was.
pub fn yaml<T: Serialize + ?Sized>(value: &T) -> anyhow::Result<String> {
    safe_yaml::to_string(value)
}

/// Serialized JSON with the characters serde_json leaves raw but a terminal must not get
/// (see [`is_hidden`]) written as JSON escapes. Every such character stands inside a string
/// (JSON's own syntax is ASCII without them), where an escape means the same character.
fn json_escape_hidden(json: String) -> String {
    if !json.chars().any(is_hidden) {
        return json;
    }
    let mut out = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        if is_hidden(c) {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        } else {
            out.push(c);
        }
    }
    out
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

/// Spaces around a cell's text: one on each side.
const CELL_PADDING: u16 = 2;

/// Rows of a [`StreamingTable`] laid out and printed together after its first ones.
const STREAMED_ROWS_PER_LAYOUT: usize = 256;

/// A table printed as its rows come, in memory bounded by a few rows: its first rows (a window
/// the caller holds) are laid out as [`table_wrapping`] lays out a whole table, and every later
/// row gets the same column widths, so the columns stay aligned however many rows follow. A
/// cell of a later row wider than its column wraps inside it. A table whose rows all fit in the
/// window prints exactly as [`table_wrapping`] would.
pub struct StreamingTable {
    /// Width of each column, padding included, as the first rows' layout made it.
    widths: Vec<u16>,
    /// Later rows waiting to be laid out together.
    rows: Vec<Vec<String>>,
    /// The bottom border, printed at the end.
    bottom: String,
}

impl StreamingTable {
    /// Lays out `header` and the `first` rows; returns the table and what to print now (all
    /// but the bottom border). When more rows are to come (`later` is some), the columns it
    /// names get at least that many characters (numbers that grow as rows come: line and
    /// sequence numbers, seconds since boot), and the wrapping column all the width left, since
    /// a later message may be longer than the first ones.
    pub fn start(
        header: &[&str],
        wrapping: &[usize],
        first: Vec<Vec<String>>,
        later: Option<&[(usize, u16)]>,
    ) -> (Self, String) {
        let mut t = table_wrapping(header, wrapping);
        let room = t.width();
        let Some(later) = later else {
            for row in first {
                t.add_row(row);
            }
            return Self::printed(Vec::new(), &t.to_string());
        };
        for row in &first {
            t.add_row(row.clone());
        }
        let text = t.to_string();
        let top = text.lines().next().unwrap_or_default();
        // The top border spells the widths: `┌─────┬───┐`.
        let mut widths: Vec<u16> = top
            .trim_start_matches('┌')
            .trim_end_matches('┐')
            .split('┬')
            .map(|run| u16::try_from(run.chars().count()).unwrap_or(u16::MAX))
            .collect();
        let mut used = i64::try_from(top.chars().count()).unwrap_or(i64::MAX);
        for &(index, characters) in later {
            if let Some(width) = widths.get_mut(index) {
                let wanted = characters.saturating_add(CELL_PADDING);
                used += i64::from(wanted.saturating_sub(*width));
                *width = (*width).max(wanted);
            }
        }
        if let (Some(room), Some(&last)) = (room, wrapping.last())
            && let Some(width) = widths.get_mut(last)
        {
            let fitted = i64::from(*width) + i64::from(room) - used;
            let least = i64::from(MIN_WRAPPING_WIDTH + CELL_PADDING);
            *width = u16::try_from(fitted.max(least)).unwrap_or(*width);
        }
        let table = StreamingTable {
            widths,
            rows: Vec::new(),
            bottom: String::new(),
        };
        let text = table.fixed_table(header, first).to_string();
        Self::printed(table.widths, &text)
    }

    /// The table that printed `text` (all of it now but its bottom border, kept for the end).
    fn printed(widths: Vec<u16>, text: &str) -> (Self, String) {
        let mut lines: Vec<&str> = text.lines().collect();
        let bottom = lines.pop().unwrap_or_default().to_owned();
        let table = StreamingTable {
            widths,
            rows: Vec::new(),
            bottom,
        };
        (table, format!("{}\n", lines.join("\n")))
    }

    /// Adds a row; returns text to print when enough rows have gathered.
    pub fn row(&mut self, cells: Vec<String>) -> Option<String> {
        self.rows.push(cells);
        (self.rows.len() >= STREAMED_ROWS_PER_LAYOUT).then(|| self.lay_out())
    }

    /// What is left to print: the rows gathered last and the bottom border.
    pub fn finish(mut self) -> String {
        let mut out = self.lay_out();
        out.push_str(&self.bottom);
        out.push('\n');
        out
    }

    /// The gathered rows at the first rows' widths, without borders above or below.
    fn lay_out(&mut self) -> String {
        if self.rows.is_empty() {
            return String::new();
        }
        let rows = std::mem::take(&mut self.rows);
        let text = self.fixed_table(&[], rows).to_string();
        let lines: Vec<&str> = text.lines().collect();
        let rows = lines
            .get(1..lines.len().saturating_sub(1))
            .unwrap_or_default();
        format!("{}\n", rows.join("\n"))
    }

    /// `rows` (under `header`, unless empty) in nodectl's style, the columns at this table's
    /// widths.
    fn fixed_table(&self, header: &[&str], rows: Vec<Vec<String>>) -> Table {
        use comfy_table::{ColumnConstraint, Width};
        let mut t = Table::new();
        t.load_style(comfy_table::presets::UTF8_FULL_CONDENSED)
            .set_content_arrangement(ContentArrangement::Disabled);
        if !header.is_empty() {
            t.set_header(header.iter().copied());
        }
        // Columns exist once a row or the header names them.
        for row in rows {
            t.add_row(row);
        }
        for (index, width) in self.widths.iter().enumerate() {
            if let Some(column) = t.column_mut(index) {
                column.set_constraint(ColumnConstraint::Absolute(Width::Fixed(*width)));
            }
        }
        t
    }
}

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

/// `text` with every line indented by `spaces`.
pub fn indented(text: &str, spaces: usize) -> String {
    let pad = " ".repeat(spaces);
    text.lines().map(|line| format!("{pad}{line}\n")).collect()
}

/// Standard output was closed by its reader (`| head`): the command ends quietly.
#[derive(Debug, thiserror::Error)]
#[error("standard output closed")]
pub struct OutputClosed;

/// Writes human text to standard output (control and invisible characters escaped) and
/// flushes; a closed pipe is [`OutputClosed`], not a panic.
pub fn emit(text: &str) -> anyhow::Result<()> {
    write_stdout(escape_controls(text).as_bytes(), true)
}

/// Writes to standard output, flushing when asked; a closed pipe is [`OutputClosed`].
fn write_stdout(bytes: &[u8], flush: bool) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    let written = stdout
        .write_all(bytes)
        .and_then(|()| if flush { stdout.flush() } else { Ok(()) });
    closed_pipe(written)
}

/// A closed pipe as [`OutputClosed`].
fn closed_pipe(result: std::io::Result<()>) -> anyhow::Result<()> {
    match result {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(OutputClosed.into()),
        other => Ok(other?),
    }
}

/// A JSON line (`--follow -o json`): `value` on one line, safe as [`json_pretty`] is, flushed.
pub fn json_line<T: Serialize + ?Sized>(value: &T) -> anyhow::Result<()> {
    let mut text = json_compact(value)?;
    text.push('\n');
    write_stdout(text.as_bytes(), true)
}

/// Standard output for a long run of output (a saved log printed as it is read): buffered, so
/// a million rows are not a million writes, and flushed by [`Output::flush`]; or memory, for
/// tests.
pub struct Output {
    target: Target,
}

enum Target {
    Stdout(std::io::BufWriter<std::io::StdoutLock<'static>>),
    Memory(Vec<u8>),
}

impl Output {
    pub fn stdout() -> Self {
        let stdout = std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout().lock());
        Output {
            target: Target::Stdout(stdout),
        }
    }

    /// Output kept in memory ([`Output::into_text`]).
    pub fn memory() -> Self {
        Output {
            target: Target::Memory(Vec::new()),
        }
    }

    /// What was written to memory (nothing for standard output).
    pub fn into_text(self) -> String {
        match self.target {
            Target::Memory(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Target::Stdout(_) => String::new(),
        }
    }

    /// Human text, control and invisible characters escaped.
    pub fn text(&mut self, text: &str) -> anyhow::Result<()> {
        self.write(escape_controls(text).as_bytes())
    }

    /// Text made safe already: JSON of [`json_pretty`], YAML of [`yaml`].
    pub fn structured(&mut self, text: &str) -> anyhow::Result<()> {
        self.write(text.as_bytes())
    }

    fn write(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        match &mut self.target {
            Target::Stdout(out) => closed_pipe(out.write_all(bytes)),
            Target::Memory(out) => {
                out.extend_from_slice(bytes);
                Ok(())
            }
        }
    }

    pub fn flush(&mut self) -> anyhow::Result<()> {
        match &mut self.target {
            Target::Stdout(out) => closed_pipe(out.flush()),
            Target::Memory(_) => Ok(()),
        }
    }
}

/// [`emit`] with a newline.
pub fn line(text: impl AsRef<str>) -> anyhow::Result<()> {
    emit(&format!("{}\n", text.as_ref()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn json_escapes_every_control_and_invisible_character_and_reads_back() {
        let message = "C1 \u{9b}31m DEL \u{7f} ESC \u{1b}[2J bidi \u{202e}x tag \u{e0041} nl \n";
        let value = serde_json::json!({ "message": message });
        for text in [json_pretty(&value).unwrap(), json_compact(&value).unwrap()] {
            for escape in ["\\u009b", "\\u007f", "\\u001b", "\\u202e", "\\udb40\\udc41"] {
                assert!(text.contains(escape), "{escape} in {text}");
            }
            assert!(!text.contains("\\u{"), "{text}");
            assert!(!text.chars().any(is_hidden), "{text:?}");
            let back: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(back["message"], message);
        }
        let yaml = structured(&value, Format::Yaml).unwrap().unwrap();
        assert!(!yaml.chars().any(is_hidden), "{yaml:?}");
        let back: serde_json::Value = serde_saphyr::from_str(&yaml).unwrap();
        assert_eq!(back["message"], message);
    }

    #[test]
    fn a_streaming_table_of_few_rows_is_the_whole_table_and_later_rows_keep_its_columns() {
        let header = ["SEQ", "ID", "MESSAGE"];
        let row = |n: usize| vec![n.to_string(), format!("id_{n:03}"), "word ".repeat(n % 70)];
        let first: Vec<Vec<String>> = (0..5).map(row).collect();
        let mut whole = table_wrapping(&header, &[2]);
        for r in &first {
            whole.add_row(r.clone());
        }
        let (t, mut out) = StreamingTable::start(&header, &[2], first.clone(), None);
        out.push_str(&t.finish());
        assert_eq!(out, format!("{whole}\n"));

        let (mut t, mut out) = StreamingTable::start(&header, &[2], first, Some(&[(0, 10)]));
        for n in 5..600 {
            if let Some(text) = t.row(row(n)) {
                out.push_str(&text);
            }
        }
        out.push_str(&t.finish());
        // Every line has its column borders where the first rows put them.
        let borders = |line: &str| -> Vec<usize> {
            line.chars()
                .enumerate()
                .filter(|(_, c)| "│┆┌┬┐╞╪╡└┴┘".contains(*c))
                .map(|(at, _)| at)
                .collect()
        };
        let first_line = borders(out.lines().next().unwrap());
        assert_eq!(first_line.len(), 4);
        assert!(out.lines().all(|l| borders(l) == first_line), "{out}");
        assert_eq!(out.lines().filter(|l| l.contains(" id_599 ")).count(), 1);
        // Room for numbers up to ten digits long.
        assert!(
            out.lines()
                .nth(1)
                .is_some_and(|l| l.starts_with("│ SEQ        ┆")),
            "{out}"
        );
        assert!(out.ends_with("┘\n"));
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
