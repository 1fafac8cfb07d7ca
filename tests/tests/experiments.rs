//! The experiment log end to end: runs recorded from real diagnoses of fixture logs, the investigation table with llama-bench figures and ratios, and `diagnose` ranking a strategy that already failed on the node last.

use std::path::Path;

use anyhow::Context as _;
use nodectl_e2e::harness::{fixture, node_fixture, nodectl};

const SDMA_ENV: [&str; 2] = ["HSA_ENABLE_SDMA=0", "ROCBLAS_USE_HIPBLASLT=1"];
const KYUZ0: &str = "kyuz0/amd-strix-halo-toolboxes:rocm-7.1.1";
const INTROPROSE: &str = "introprose/llamacpp_rocm_minimal:latest";

fn path_str(path: &Path) -> anyhow::Result<&str> {
    path.to_str().context("path is not UTF-8")
}

/// `nodectl diagnose` of a log on a fixture node, saved as JSON.
fn diagnosis(node: &str, log: &Path, out: &Path) -> anyhow::Result<()> {
    let run = nodectl(&[
        "--host-root",
        node,
        "diagnose",
        "--log",
        path_str(log)?,
        "-o",
        "json",
    ])?;
    // A stalled run exits 1.
    anyhow::ensure!(
        run.code == 1,
        "diagnose {}: exit {} {}\n{}",
        log.display(),
        run.code,
        run.stderr,
        run.stdout
    );
    std::fs::write(out, run.stdout)?;
    Ok(())
}

fn record(log: &Path, args: &[&str]) -> anyhow::Result<()> {
    let mut all = vec!["experiment", "record", "--file", path_str(log)?];
    all.extend_from_slice(args);
    let run = nodectl(&all)?;
    anyhow::ensure!(run.code == 0, "record {args:?}: {}", run.stderr);
    Ok(())
}

/// The strategies `diagnose` proposes for `run_log` on `node`, with the experiment log `log`.
fn strategies_with(
    node: &str,
    run_log: &Path,
    log: &Path,
) -> anyhow::Result<Vec<serde_json::Value>> {
    let run = nodectl(&[
        "--host-root",
        node,
        "diagnose",
        "--log",
        path_str(run_log)?,
        "--experiments",
        path_str(log)?,
        "-o",
        "json",
    ])?;
    let d: serde_json::Value = serde_json::from_str(&run.stdout)?;
    Ok(d["strategies"].as_array().context("strategies")?.clone())
}

fn env_flags(env: &[&str]) -> Vec<String> {
    env.iter().map(|e| format!("--env={e}")).collect()
}

#[test]
fn four_runs_and_a_baseline_give_the_investigation_table() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let log = dir.path().join("experiments.jsonl");
    let node = node_fixture("strix-halo-risky");
    let node = path_str(&node)?;
    // The upload shows in the verbose log; the same run without its upload lines (as a build
    // that does not print them) goes from tensors to graph reserve.
    let verbose_log = fixture("llama/hang-graph_reserve-rocm-legacy-verbose-plain.log");
    let terse_log = dir.path().join("terse.log");
    let text = std::fs::read_to_string(&verbose_log)?;
    let terse_text: String = text
        .lines()
        .filter(|l| !l.starts_with("load_all_data") && !l.chars().all(|c| c == '.'))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&terse_log, terse_text)?;
    // A plain log's age is its file's: as old as the run it was cut from, so it reads stalled.
    std::fs::File::options()
        .write(true)
        .open(&terse_log)?
        .set_modified(std::fs::metadata(&verbose_log)?.modified()?)?;
    let verbose = dir.path().join("verbose.json");
    let terse = dir.path().join("terse.json");
    diagnosis(node, &verbose_log, &verbose)?;
    diagnosis(node, &terse_log, &terse)?;
    let bench = fixture("llama-bench/cpu-tiny.md");
    let bench_json = fixture("llama-bench/cpu-tiny.json");

    let sdma = env_flags(&SDMA_ENV);
    let mut one: Vec<&str> = vec!["--strategy", "sdma off", "--image", KYUZ0];
    one.extend(sdma.iter().map(String::as_str));
    one.extend(["--from-diagnosis", path_str(&verbose)?]);
    one.extend(["--bench", path_str(&bench)?]);
    record(&log, &one)?;

    let mut two: Vec<&str> = vec!["--strategy", "minimal image", "--image", INTROPROSE];
    two.extend(sdma.iter().map(String::as_str));
    two.extend(["--from-diagnosis", path_str(&terse)?]);
    record(&log, &two)?;

    let mut three: Vec<&str> = vec!["--strategy", "gfx override", "--image", KYUZ0];
    three.extend(sdma.iter().map(String::as_str));
    three.extend(["--env=HSA_OVERRIDE_GFX_VERSION=11.0.0"]);
    three.extend(["--from-diagnosis", path_str(&terse)?]);
    three.extend(["--bench", path_str(&bench_json)?]);
    record(&log, &three)?;

    let mut four: Vec<&str> = vec!["--strategy", "flash_attention_off", "--image", KYUZ0];
    four.extend(sdma.iter().map(String::as_str));
    four.extend([
        "--env=HSA_OVERRIDE_GFX_VERSION=11.0.0",
        "--arg=-fa",
        "--arg=off",
    ]);
    four.extend(["--from-diagnosis", path_str(&terse)?]);
    record(&log, &four)?;

    let baseline = fixture("llama-bench/vulkan-baseline.md");
    record(
        &log,
        &[
            "--strategy",
            "vulkan",
            "--image",
            "kyuz0/amd-strix-halo-toolboxes:vulkan-radv",
            "--result",
            "serving",
            "--bench",
            path_str(&baseline)?,
        ],
    )?;

    let run = nodectl(&[
        "experiment",
        "table",
        "--file",
        path_str(&log)?,
        "--baseline",
        "vulkan",
    ])?;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 2 + 5, "{}", run.stdout);
    assert!(
        lines[0].starts_with("| Strategy | Image | Key changes | Phase reached | Result |"),
        "{}",
        lines[0]
    );
    assert!(
        lines[0].contains("pp512 vs vulkan") && lines[0].contains("tg128 vs vulkan"),
        "{}",
        lines[0]
    );
    let cells = |line: &str| -> Vec<String> {
        line.trim_matches('|')
            .split(" | ")
            .map(|c| c.trim().to_owned())
            .collect()
    };
    let row1 = cells(lines[2]);
    assert_eq!(
        row1[..5],
        [
            "sdma off",
            KYUZ0,
            "HSA_ENABLE_SDMA=0 ROCBLAS_USE_HIPBLASLT=1",
            "graph reserve",
            "past the upload, stalled at graph reserve"
        ]
    );
    let row2 = cells(lines[3]);
    assert_eq!(row2[1], INTROPROSE);
    assert_eq!(row2[4], "stalled at graph reserve");
    let row3 = cells(lines[4]);
    assert_eq!(
        row3[2],
        "HSA_ENABLE_SDMA=0 ROCBLAS_USE_HIPBLASLT=1 HSA_OVERRIDE_GFX_VERSION=11.0.0"
    );
    assert_eq!(row3[4], "stalled at graph reserve");
    let row4 = cells(lines[5]);
    assert!(
        row4[2].ends_with("HSA_OVERRIDE_GFX_VERSION=11.0.0 -fa off"),
        "{}",
        row4[2]
    );
    assert_eq!(row4[3], "graph reserve");
    let base = cells(lines[6]);
    assert_eq!(
        base[..3],
        ["vulkan", "kyuz0/amd-strix-halo-toolboxes:vulkan-radv", "—"]
    );
    assert_eq!(base[5..], ["721.00", "63.00", "1.00", "1.00"]);

    // The ratios, to two decimals, from the real llama-bench figures.
    let figures = |path: &Path| -> anyhow::Result<(f64, f64)> {
        let results = nodectl_diagnosis::llama_bench::parse(&std::fs::read_to_string(path)?)?;
        let pick = |prefix: &str| {
            results
                .iter()
                .find(|r| r.test.starts_with(prefix))
                .map(|r| r.tokens_per_s)
                .context("no such test")
        };
        Ok((pick("pp")?, pick("tg")?))
    };
    for (row, bench) in [(&row1, &bench), (&row3, &bench_json)] {
        let (pp, tg) = figures(bench)?;
        assert_eq!(row[5], format!("{pp:.2}"));
        assert_eq!(row[6], format!("{tg:.2}"));
        assert_eq!(row[7], format!("{:.2}", pp / 721.0));
        assert_eq!(row[8], format!("{:.2}", tg / 63.0));
    }
    // No bench: dashes.
    assert_eq!(row2[5..], ["—", "—", "—", "—"]);

    // JSON of the same rows.
    let run = nodectl(&[
        "experiment",
        "table",
        "--file",
        path_str(&log)?,
        "-o",
        "json",
    ])?;
    let rows: serde_json::Value = serde_json::from_str(&run.stdout)?;
    assert_eq!(rows.as_array().map(Vec::len), Some(5));
    assert_eq!(rows[0]["phase_reached"], "graph reserve");

    // The same node's diagnosis now ranks flash attention off last and says why.
    let strategies = strategies_with(node, &terse_log, &log)?;
    let last = strategies.last().context("no strategy")?;
    assert_eq!(last["id"], "flash_attention_off", "{strategies:#?}");
    let tried = last["tried_before"].as_str().context("tried_before")?;
    assert!(tried.contains("stalled at graph reserve"), "{tried}");
    assert!(
        strategies
            .iter()
            .filter(|s| s["id"] != "flash_attention_off")
            .all(|s| s.get("tried_before").is_none()),
        "{strategies:#?}"
    );
    // Another node's log is not this node's history.
    let strategies = strategies_with(
        path_str(&node_fixture("strix-halo-healthy"))?,
        &terse_log,
        &log,
    )?;
    assert_eq!(
        strategies.first().map(|s| &s["id"]),
        Some(&"flash_attention_off".into())
    );
    assert!(strategies.iter().all(|s| s.get("tried_before").is_none()));
    Ok(())
}

#[test]
fn bad_input_is_an_input_error_naming_it() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let log = dir.path().join("experiments.jsonl");
    let log_arg = path_str(&log)?;
    let run = nodectl(&["experiment", "record", "--file", log_arg, "--strategy", "x"])?;
    assert_eq!(run.code, 2, "neither --result nor --from-diagnosis");
    let run = nodectl(&[
        "experiment",
        "record",
        "--file",
        log_arg,
        "--strategy",
        "x",
        "--result",
        "ok",
        "--env",
        "NOEQUALS",
    ])?;
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("expected NAME=VALUE"), "{}", run.stderr);
    let junk = dir.path().join("junk.md");
    std::fs::write(&junk, "no table here\n")?;
    let run = nodectl(&[
        "experiment",
        "record",
        "--file",
        log_arg,
        "--strategy",
        "x",
        "--result",
        "ok",
        "--bench",
        path_str(&junk)?,
    ])?;
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("no llama-bench results"),
        "{}",
        run.stderr
    );
    std::fs::write(
        &log,
        "{\"recorded_at\": \"2026-12-01T10:00:00Z\", \"strategy\": \"a\"}\nnot json\n",
    )?;
    let run = nodectl(&["experiment", "list", "--file", log_arg])?;
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("experiments.jsonl:2:"),
        "{}",
        run.stderr
    );
    Ok(())
}

#[test]
fn captured_llama_bench_outputs_parse_in_every_form() -> anyhow::Result<()> {
    for name in ["cpu-tiny.md", "cpu-tiny.json", "cpu-tiny.jsonl"] {
        let text = std::fs::read_to_string(fixture(&format!("llama-bench/{name}")))?;
        let results = nodectl_diagnosis::llama_bench::parse(&text)?;
        let tests: Vec<&str> = results.iter().map(|r| r.test.as_str()).collect();
        assert_eq!(tests, ["pp512", "tg128"], "{name}");
        assert!(results.iter().all(|r| r.tokens_per_s > 0.0), "{name}");
        assert!(
            results.iter().all(|r| r.backend.as_deref() == Some("CPU")),
            "{name}"
        );
    }
    Ok(())
}
