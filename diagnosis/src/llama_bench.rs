//! llama-bench results read from its Markdown table (`-o md`, the default) or its JSON (`-o json`) and JSON Lines (`-o jsonl`) output.
//!
//! The formats are llama.cpp's `tools/llama-bench`: the Markdown printer writes one row per test
//! with a `test` column (`pp512`, `tg128`, `pp512+tg128`, any of them with ` @ d4096` for a
//! depth) and a `t/s` column (`avg ± stddev`), and a `build: COMMIT (NUMBER)` footer; the JSON
//! printers write one object per test with `n_prompt`, `n_gen`, `n_depth`, `avg_ts` and
//! `stddev_ts`. Pure functions over the text.

use serde::{Deserialize, Serialize};

/// One test of a llama-bench run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchResult {
    /// As llama-bench names it: `pp512`, `tg128`, `pp512+tg128`, `pp512 @ d4096`.
    pub test: String,
    pub tokens_per_s: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stddev_tokens_per_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// `COMMIT (NUMBER)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<String>,
}

impl BenchResult {
    /// Prompt processing alone (`pp512`), without depth.
    pub fn is_prompt_processing(&self) -> bool {
        self.test.starts_with("pp") && !self.test.contains('+')
    }

    /// Generation alone (`tg128`).
    pub fn is_generation(&self) -> bool {
        self.test.starts_with("tg")
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum BenchError {
    #[error("line {line}: {reason}")]
    Line { line: usize, reason: String },
    #[error(
        "no llama-bench results: expected its Markdown table (a header with `test` and `t/s` columns), or its -o json / -o jsonl output"
    )]
    Nothing,
}

/// The tests of a llama-bench output, in the order printed.
pub fn parse(text: &str) -> Result<Vec<BenchResult>, BenchError> {
    let trimmed = text.trim_start();
    let results = if trimmed.starts_with('[') {
        parse_json_array(text)?
    } else if trimmed.starts_with('{') {
        parse_json_lines(text)?
    } else {
        parse_markdown(text)?
    };
    if results.is_empty() {
        return Err(BenchError::Nothing);
    }
    Ok(results)
}

/// The fields of one JSON test object that are used.
#[derive(Debug, Deserialize)]
struct JsonTest {
    #[serde(default)]
    n_prompt: u64,
    #[serde(default)]
    n_gen: u64,
    #[serde(default)]
    n_depth: u64,
    avg_ts: f64,
    #[serde(default)]
    stddev_ts: Option<f64>,
    #[serde(default)]
    backends: Option<String>,
    #[serde(default)]
    model_type: Option<String>,
    #[serde(default)]
    build_commit: Option<String>,
    #[serde(default)]
    build_number: Option<i64>,
}

impl JsonTest {
    fn into_result(self) -> BenchResult {
        let mut test = match (self.n_prompt, self.n_gen) {
            (p, 0) => format!("pp{p}"),
            (0, g) => format!("tg{g}"),
            (p, g) => format!("pp{p}+tg{g}"),
        };
        if self.n_depth > 0 {
            test.push_str(&format!(" @ d{}", self.n_depth));
        }
        let build = match (self.build_commit, self.build_number) {
            (Some(commit), Some(number)) => Some(format!("{commit} ({number})")),
            (Some(commit), None) => Some(commit),
            (None, _) => None,
        };
        BenchResult {
            test,
            tokens_per_s: self.avg_ts,
            stddev_tokens_per_s: self.stddev_ts,
            backend: self.backends,
            model: self.model_type,
            build,
        }
    }
}

fn parse_json_array(text: &str) -> Result<Vec<BenchResult>, BenchError> {
    let tests: Vec<JsonTest> = serde_json::from_str(text).map_err(|e| BenchError::Line {
        line: e.line(),
        reason: format!("not llama-bench's -o json output: {e}"),
    })?;
    Ok(tests.into_iter().map(JsonTest::into_result).collect())
}

fn parse_json_lines(text: &str) -> Result<Vec<BenchResult>, BenchError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let test: JsonTest = serde_json::from_str(line).map_err(|e| BenchError::Line {
            line: i + 1,
            reason: format!("not a llama-bench -o jsonl object: {e}"),
        })?;
        out.push(test.into_result());
    }
    Ok(out)
}

fn cells(line: &str) -> Option<Vec<&str>> {
    let inner = line.trim().strip_prefix('|')?.strip_suffix('|')?;
    Some(inner.split('|').map(str::trim).collect())
}

/// `2368.80 ± 93.24` → (2368.8, Some(93.24)); a bare number has no spread.
fn rate(cell: &str) -> Option<(f64, Option<f64>)> {
    match cell.split_once('±') {
        Some((avg, spread)) => Some((avg.trim().parse().ok()?, spread.trim().parse().ok())),
        None => Some((cell.trim().parse().ok()?, None)),
    }
}

fn parse_markdown(text: &str) -> Result<Vec<BenchResult>, BenchError> {
    let mut out = Vec::new();
    // (test, t/s, backend, model) column indices of the table being read.
    let mut columns: Option<(usize, usize, Option<usize>, Option<usize>)> = None;
    let mut build = None;
    for (i, line) in text.lines().enumerate() {
        if let Some(rest) = line.trim().strip_prefix("build: ") {
            build = Some(rest.trim().to_owned());
            continue;
        }
        let Some(row) = cells(line) else {
            // A table ends at its first line that is not a row.
            columns = None;
            continue;
        };
        if row
            .iter()
            .all(|c| !c.is_empty() && c.chars().all(|ch| matches!(ch, '-' | ':')))
        {
            continue;
        }
        let find = |name: &str| row.iter().position(|c| *c == name);
        if let (Some(test), Some(ts)) = (find("test"), find("t/s")) {
            columns = Some((test, ts, find("backend"), find("model")));
            continue;
        }
        let Some((test, ts, backend, model)) = columns else {
            continue;
        };
        let (Some(test_cell), Some(ts_cell)) = (row.get(test), row.get(ts)) else {
            return Err(BenchError::Line {
                line: i + 1,
                reason: format!("a row with {} cells, fewer than its header", row.len()),
            });
        };
        let (tokens_per_s, stddev) = rate(ts_cell).ok_or_else(|| BenchError::Line {
            line: i + 1,
            reason: format!("t/s {ts_cell:?} is not a number (or `avg ± stddev`)"),
        })?;
        // Older builds printed `pp 512`.
        let test_name = test_cell.replacen("pp ", "pp", 1).replacen("tg ", "tg", 1);
        let text_cell = |index: Option<usize>| {
            index
                .and_then(|c| row.get(c))
                .filter(|c| !c.is_empty())
                .map(|c| (*c).to_owned())
        };
        out.push(BenchResult {
            test: test_name,
            tokens_per_s,
            stddev_tokens_per_s: stddev,
            backend: text_cell(backend),
            model: text_cell(model),
            build: None,
        });
    }
    // The footer follows the table it belongs to.
    if let Some(build) = build {
        for result in &mut out {
            result.build = Some(build.clone());
        }
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const MARKDOWN: &str = "\
| model                          |       size |     params | backend    | ngl |            test |                  t/s |
| ------------------------------ | ---------: | ---------: | ---------- | --: | --------------: | -------------------: |
| llama 7B mostly Q4_0           |   3.56 GiB |     6.74 B | ROCm       |  99 |           pp512 |      2368.80 ± 93.24 |
| llama 7B mostly Q4_0           |   3.56 GiB |     6.74 B | ROCm       |  99 |           tg128 |        131.42 ± 0.59 |
| llama 7B mostly Q4_0           |   3.56 GiB |     6.74 B | ROCm       |  99 |   pp512 @ d4096 |      1800.00 ± 10.00 |

build: 8cf427ff (5163)
";

    #[test]
    fn markdown_rows_with_their_build() {
        let results = parse(MARKDOWN).unwrap();
        assert_eq!(results.len(), 3);
        assert_eq!(results[0].test, "pp512");
        assert_eq!(results[0].tokens_per_s, 2368.80);
        assert_eq!(results[0].stddev_tokens_per_s, Some(93.24));
        assert_eq!(results[1].test, "tg128");
        assert_eq!(results[1].backend.as_deref(), Some("ROCm"));
        assert_eq!(results[2].test, "pp512 @ d4096");
        assert!(results[0].is_prompt_processing() && results[1].is_generation());
        assert_eq!(results[0].build.as_deref(), Some("8cf427ff (5163)"));
    }

    #[test]
    fn older_markdown_names_and_json_forms() {
        let old = "| model | backend | test | t/s |\n|---|---|---|---:|\n| llama 7B | CUDA | pp 512 | 2368.80 ± 93.24 |\n";
        assert_eq!(parse(old).unwrap()[0].test, "pp512");
        let json = r#"[
  {"build_commit": "8cf427ff", "build_number": 5163, "backends": "Vulkan", "model_type": "qwen2 7B", "n_prompt": 512, "n_gen": 0, "n_depth": 0, "avg_ts": 721.5, "stddev_ts": 3.2},
  {"n_prompt": 0, "n_gen": 128, "avg_ts": 63.0}
]"#;
        let results = parse(json).unwrap();
        assert_eq!(results[0].test, "pp512");
        assert_eq!(results[0].build.as_deref(), Some("8cf427ff (5163)"));
        assert_eq!(results[1].test, "tg128");
        let jsonl = "{\"n_prompt\": 512, \"n_gen\": 128, \"n_depth\": 4096, \"avg_ts\": 10.0}\n";
        assert_eq!(parse(jsonl).unwrap()[0].test, "pp512+tg128 @ d4096");
    }

    #[test]
    fn errors_name_the_line() {
        assert_eq!(parse("nothing here\n"), Err(BenchError::Nothing));
        let bad = "| test | t/s |\n|---|---|\n| pp512 | fast |\n";
        let e = parse(bad).unwrap_err();
        assert!(e.to_string().starts_with("line 3:"), "{e}");
        let e = parse("{\"avg_ts\": 1}\n{broken\n").unwrap_err();
        assert!(e.to_string().starts_with("line 2:"), "{e}");
    }

    proptest::proptest! {
        #[test]
        fn never_panics(text in "\\PC{0,400}") {
            let _ = parse(&text);
        }
    }
}
