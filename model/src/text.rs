//! Text from a node or a log made safe to show (control and invisible characters escaped, long cells cut), and quantities in words.

/// Whether `c` must not reach a terminal raw: control characters (C0 but the newline, DEL,
/// C1) move the cursor, retitle or clear the screen; format characters (Unicode category Cf:
/// bidi embeddings, overrides, isolates and marks, zero-width spaces and joiners, the soft
/// hyphen, tags) and the line and paragraph separators reorder or hide text, so a line can
/// show something other than what it holds (CVE-2021-42574).
pub fn is_hidden(c: char) -> bool {
    use unicode_general_category::{GeneralCategory, get_general_category};
    if c.is_ascii() {
        return c.is_ascii_control() && c != '\n';
    }
    c.is_control()
        || matches!(
            get_general_category(c),
            GeneralCategory::Format
                | GeneralCategory::LineSeparator
                | GeneralCategory::ParagraphSeparator
        )
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

/// `text` with every control character but the newline and every invisible character escaped
/// (`\u{1b}`, `\t`, `\r`, `\u{202e}`; see [`is_hidden`]): text from a node or a saved log must
/// never move the cursor, clear the screen or retitle the terminal, show other text than it
/// holds, nor break a table's layout. JSON and YAML escape such characters in their own way.
pub fn escape_controls(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(is_hidden) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if is_hidden(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
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
#[allow(clippy::unwrap_used)]
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
    fn invisible_characters_are_shown_escaped() {
        assert_eq!(
            escape_controls("invoice\u{202e}fdp.exe"),
            "invoice\\u{202e}fdp.exe"
        );
        for c in [
            '\u{202a}',
            '\u{202b}',
            '\u{202c}',
            '\u{202d}',
            '\u{202e}',
            '\u{2066}',
            '\u{2067}',
            '\u{2068}',
            '\u{2069}',
            '\u{200e}',
            '\u{200f}',
            '\u{61c}',
            '\u{200b}',
            '\u{200c}',
            '\u{200d}',
            '\u{2060}',
            '\u{feff}',
            '\u{ad}',
            '\u{e0001}',
            '\u{e0041}',
            '\u{2028}',
            '\u{2029}',
            '\u{7f}',
            '\u{85}',
            '\u{9b}',
        ] {
            let text = format!("a{c}b");
            assert_eq!(escape_controls(&text), format!("a{}b", c.escape_default()));
            assert!(!cell(&text).contains(c), "{c:?}");
        }
        // Visible text of any script stays as it is, combining marks and emoji included.
        for text in ["é e\u{301} 日本語 🙂 ü", "tab\tnewline\n"] {
            assert_eq!(escape_controls(text).replace("\\t", "\t"), text);
        }
    }
}
