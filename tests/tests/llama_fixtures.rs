//! The llama.cpp log parser over every fixture log (each phase hung, each prefix style, ROCm and Vulkan, healthy, crashed, terse, and captures of the real server): the phase and outcome each file stands for, and golden outputs.

use std::time::Duration;

use nodectl_diagnosis::llama_log;

use nodectl_e2e::harness::{assert_golden, fixture};
use serde_json::Value;

/// Far after every fixture's last line: a hang is stalled by then.
const LONG_AFTER: Duration = Duration::from_secs(86_400);
const STALL_AFTER: Duration = Duration::from_secs(120);

#[test]
fn every_fixture_log_reaches_its_phase_and_outcome() -> anyhow::Result<()> {
    let dir = fixture("llama");
    // cases.json: the generated logs; captured.json: logs captured from the real server.
    let mut cases: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("cases.json"))?)?;
    let captured: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("captured.json"))?)?;
    cases.extend(captured);
    assert!(cases.len() >= 40, "{} cases", cases.len());
    let mut wrong = Vec::new();
    for case in &cases {
        let file = case["file"].as_str().unwrap_or_default();
        let text = std::fs::read_to_string(dir.join(file))?;
        let log = llama_log::parse_dated(text.lines(), llama_log::JournalYear::given(2026));
        let outcome = log.outcome(Some(LONG_AFTER), STALL_AFTER);
        let phase = log.last_phase().map(llama_log::Phase::as_str);
        let expected_phase = case["expect_last_phase"].as_str();
        let expected_outcome = case["expect_outcome_hint"].as_str();
        if phase != expected_phase || Some(outcome.as_str()) != expected_outcome {
            wrong.push(format!(
                "{file}: phase {phase:?} outcome {} (expected {expected_phase:?} {expected_outcome:?})",
                outcome.as_str()
            ));
        }
        if let Some(backend) = case["backend"].as_str()
            && backend != "cpu"
            && log
                .backend
                .map(llama_log::Backend::as_str)
                .is_some_and(|b| b != backend)
        {
            wrong.push(format!(
                "{file}: backend {:?}, expected {backend}",
                log.backend
            ));
        }
        let golden = dir.join(file.replace(".log", ".golden.json"));
        let mut json = serde_json::to_value(&log)?;
        json["outcome"] = Value::from(outcome.as_str());
        assert_golden(&golden, &json)?;
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    Ok(())
}

/// Excerpts of logs from public reports (reports/README.md): crash markers, a crash known only
/// from its backtrace, LM Studio's and lemonade's wrappers.
#[test]
fn report_excerpts_reach_their_phase_outcome_and_errors() -> anyhow::Result<()> {
    let dir = fixture("llama/reports");
    let cases: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reports.json"))?)?;
    assert!(cases.len() >= 6, "{} cases", cases.len());
    let mut wrong = Vec::new();
    for case in &cases {
        let file = case["file"].as_str().unwrap_or_default();
        assert!(
            case["source"]
                .as_str()
                .is_some_and(|s| s.starts_with("https://")),
            "{file}: no source"
        );
        let text = std::fs::read_to_string(dir.join(file))?;
        let log = llama_log::parse_dated(text.lines(), llama_log::JournalYear::given(2026));
        let outcome = log.outcome(Some(LONG_AFTER), STALL_AFTER);
        let got = (
            log.last_phase().map(llama_log::Phase::as_str),
            outcome.as_str(),
            log.backend.map(llama_log::Backend::as_str),
            log.errors
                .iter()
                .map(|e| e.kind.as_str())
                .collect::<Vec<_>>(),
        );
        let expected = (
            case["expect_last_phase"].as_str(),
            case["expect_outcome"].as_str().unwrap_or_default(),
            case["backend"].as_str(),
            case["errors"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>(),
        );
        if got != expected {
            wrong.push(format!("{file}: got {got:?}, expected {expected:?}"));
        }
        let mut json = serde_json::to_value(&log)?;
        json["outcome"] = Value::from(outcome.as_str());
        assert_golden(&dir.join(file.replace(".log", ".golden.json")), &json)?;
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    Ok(())
}
