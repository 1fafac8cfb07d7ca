//! `nodectl node show|check` end to end: the agent over each fixture tree on loopback, the
//! in-process collectors on the same tree, committed golden JSON, exit codes, and the outside
//! vega10 capture.

use std::path::Path;

use anyhow::Context as _;
use nodectl_e2e::harness::{Agent, node_fixture, nodectl, shared};
use serde_json::Value;

const FIXTURES: [&str; 4] = [
    "strix-halo-healthy",
    "strix-halo-mes83",
    "strix-halo-risky",
    "no-gpu",
];

/// Parses `node show -o json` and blanks the one field that differs between runs.
fn normalised(stdout: &str) -> anyhow::Result<Value> {
    let mut json: Value = serde_json::from_str(stdout).context("node show -o json output")?;
    let taken_at = json.get_mut("taken_at").context("snapshot has taken_at")?;
    anyhow::ensure!(
        taken_at.as_str().is_some_and(|t| t.ends_with('Z')),
        "taken_at is RFC 3339 UTC: {taken_at}"
    );
    *taken_at = Value::String("<taken_at>".to_owned());
    Ok(json)
}

fn show_json(args: &[&str]) -> anyhow::Result<Value> {
    let mut all = args.to_vec();
    all.extend(["node", "show", "-o", "json"]);
    let run = nodectl(&all)?;
    anyhow::ensure!(
        run.code == 0,
        "nodectl {all:?} exited {}: {}",
        run.code,
        run.stderr
    );
    normalised(&run.stdout)
}

/// Compares with `tests/fixtures/nodes/<name>.golden.json`; `NODECTL_UPDATE_GOLDEN=1` rewrites it.
fn check_golden(name: &str, json: &Value) -> anyhow::Result<()> {
    nodectl_e2e::harness::assert_golden(&node_fixture(&format!("{name}.golden.json")), json)
}

#[test]
fn agent_and_in_process_snapshots_match_the_golden_json_of_every_fixture() -> anyhow::Result<()> {
    for name in FIXTURES {
        let root = node_fixture(name);
        let agent = Agent::start(&root, &[])?;
        let over_grpc = show_json(&["--endpoint", &agent.endpoint])?;
        let root_arg = root.to_string_lossy().into_owned();
        let in_process = show_json(&["--host-root", &root_arg])?;
        assert_eq!(over_grpc, in_process, "{name}: gRPC and in-process differ");
        check_golden(name, &in_process)?;
        assert!(agent.terminate()?, "{name}: agent exits 0 on SIGTERM");
    }
    Ok(())
}

#[test]
fn healthy_json_has_the_documented_shape() -> anyhow::Result<()> {
    let root = node_fixture("strix-halo-healthy");
    let json = show_json(&["--host-root", &root.to_string_lossy()])?;
    let card = &json["cards"][0];
    assert_eq!(card["name"], "card1");
    assert_eq!(card["gfx_target"], "gfx1151");
    assert_eq!(card["pci_id"], "1002:1586");
    assert_eq!(card["bdf"], "0000:c1:00.0");
    assert_eq!(card["firmware"]["mes_fw_version"], "0x00000080");
    assert_eq!(card["memory"]["gtt_total_bytes"], 103_079_215_104_u64);
    assert_eq!(card["gpu_metrics"]["format_revision"], 3);
    assert_eq!(card["gpu_metrics"]["supported"], true);
    let params = &json["module_parameters"];
    assert_eq!(params["amdgpu"]["cwsr_enable"], 0);
    assert_eq!(params["amdgpu"]["ppfeaturemask"], "0xfff7bfff");
    assert_eq!(params["amdgpu"]["debug_evictions"], false);
    assert_eq!(params["ttm"]["pages_limit"], 25_165_824);
    assert_eq!(json["host"]["os_release"]["talos_version"], "v1.12.0");
    assert_eq!(json["findings"], Value::Array(vec![]));
    assert_eq!(json["problems"], Value::Array(vec![]));
    Ok(())
}

fn finding_ids(json: &Value) -> Vec<String> {
    json["findings"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|f| f["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn check_on_the_risky_node_lists_every_finding_and_exits_1() -> anyhow::Result<()> {
    let root = node_fixture("strix-halo-risky");
    let root = root.to_string_lossy();
    let run = nodectl(&["--host-root", &root, "node", "check"])?;
    assert_eq!(
        run.code, 1,
        "stdout: {}\nstderr: {}",
        run.stdout, run.stderr
    );
    for id in [
        "mes_firmware_known_bad",
        "cwsr_hang_risk",
        "gtt_size_conflict",
        "unknown_module_parameter",
        "kernel_before_6_18_4",
        "misspelt_module_argument",
        "amd_iommu_off",
    ] {
        assert!(
            run.stdout.contains(id),
            "{id} missing from:\n{}",
            run.stdout
        );
    }
    assert!(run.stdout.contains("amdgpu.gtt_size=131072"));
    assert!(
        run.stdout
            .contains("no module aamdgpu: did you mean amdgpu.cwsr_enable=0?"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("did you mean amdgpu.gttsize?"),
        "{}",
        run.stdout
    );
    assert!(
        !run.stdout.contains("gpu_clock_stuck_low"),
        "one reading is not a trend"
    );

    // With sampling, the busy-at-floor clock shows up too; -o json carries id and severity.
    let run = nodectl(&[
        "--host-root",
        &root,
        "node",
        "check",
        "--sample",
        "1s",
        "-o",
        "json",
    ])?;
    assert_eq!(run.code, 1, "stderr: {}", run.stderr);
    let json: Value = serde_json::from_str(&run.stdout)?;
    let ids = finding_ids(&json);
    assert_eq!(
        ids,
        [
            "mes_firmware_known_bad",
            "cwsr_hang_risk",
            "gpu_clock_stuck_low",
            "gtt_size_conflict",
            "kernel_before_6_18_4",
            "misspelt_module_argument",
            "unknown_module_parameter",
            "amd_iommu_off",
        ]
    );
    assert_eq!(json["findings"][0]["severity"], "critical");
    assert_eq!(json["findings"][7]["severity"], "info");
    assert!(
        json["cards"][0]["samples"]
            .as_array()
            .is_some_and(|s| s.len() >= 3)
    );
    // Only the amdgpu card: the simpledrm card0 is not listed.
    assert_eq!(json["cards"].as_array().map(Vec::len), Some(1));
    assert_eq!(json["cards"][0]["name"], "card1");
    Ok(())
}

#[test]
fn check_samples_over_grpc_too() -> anyhow::Result<()> {
    let agent = Agent::start(&node_fixture("strix-halo-risky"), &[])?;
    let run = nodectl(&[
        "--endpoint",
        &agent.endpoint,
        "node",
        "check",
        "--sample",
        "1s",
        "-o",
        "json",
    ])?;
    assert_eq!(run.code, 1, "stderr: {}", run.stderr);
    let json: Value = serde_json::from_str(&run.stdout)?;
    assert!(finding_ids(&json).contains(&"gpu_clock_stuck_low".to_owned()));
    Ok(())
}

#[test]
fn check_on_healthy_and_mes83_nodes() -> anyhow::Result<()> {
    let healthy = node_fixture("strix-halo-healthy");
    let run = nodectl(&["--host-root", &healthy.to_string_lossy(), "node", "check"])?;
    assert_eq!(
        run.code, 0,
        "stdout: {}\nstderr: {}",
        run.stdout, run.stderr
    );
    assert!(run.stdout.contains("no findings"));

    let mes83 = node_fixture("strix-halo-mes83");
    let run = nodectl(&["--host-root", &mes83.to_string_lossy(), "node", "check"])?;
    assert_eq!(run.code, 1, "stdout: {}", run.stdout);
    assert!(run.stdout.contains("mes_firmware_known_bad"));
    assert!(
        run.stdout
            .contains("https://github.com/ROCm/ROCm/issues/5724")
    );
    Ok(())
}

#[test]
fn show_table_puts_the_operator_columns_first() -> anyhow::Result<()> {
    let root = node_fixture("strix-halo-healthy");
    let run = nodectl(&["--host-root", &root.to_string_lossy(), "node", "show"])?;
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    let first_table_end = run.stdout.find("hostname").context("host table")?;
    let head = &run.stdout[..first_table_end];
    for text in ["gfx1151", "0x00000080", "600 / 600 / 2900 MHz", "96.0 GiB"] {
        assert!(
            head.contains(text),
            "{text} not in the first table:\n{head}"
        );
    }
    assert!(run.stdout.contains("v1.12.0"));
    Ok(())
}

#[test]
fn show_on_this_machine_finds_no_amdgpu_device() -> anyhow::Result<()> {
    if nodectl_e2e::harness::has_amdgpu() {
        eprintln!(
            "SKIPPED: this machine has an amdgpu device; the test expects a machine without one"
        );
        return Ok(());
    }
    let run = nodectl(&["node", "show"])?;
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    assert!(
        run.stdout.contains("no amdgpu device found"),
        "stdout: {}",
        run.stdout
    );
    let json = show_json(&[])?;
    assert_eq!(json["cards"], Value::Array(vec![]));
    assert!(
        json["host"]["kernel_release"]
            .as_str()
            .is_some_and(|k| !k.is_empty())
    );
    assert!(
        json["host"]["mem_total_bytes"]
            .as_u64()
            .is_some_and(|m| m > 0)
    );
    Ok(())
}

#[test]
fn vega10_capture_lists_only_the_amdgpu_card() -> anyhow::Result<()> {
    let Some(root) = shared("fixtures/procfs-vega10") else {
        return Ok(());
    };
    let root_arg = root.to_string_lossy().into_owned();
    let json = show_json(&["--host-root", &root_arg])?;
    let agent = Agent::start(Path::new(&root), &[])?;
    assert_eq!(show_json(&["--endpoint", &agent.endpoint])?, json);

    let cards = json["cards"].as_array().context("cards")?;
    assert_eq!(cards.len(), 1, "exactly one amdgpu card: {cards:?}");
    let card = &cards[0];
    assert_eq!(card["name"], "card0");
    assert_eq!(card["pci_id"], "1002:687f");
    assert_eq!(card["bdf"], "0000:09:00.0");
    let sclk = card["dpm_clocks"]["sclk"]
        .as_array()
        .context("sclk levels")?;
    assert_eq!(sclk.len(), 8);
    let current: Vec<&Value> = sclk.iter().filter(|l| l["current"] == true).collect();
    assert_eq!(current.len(), 1);
    assert_eq!(current[0]["mhz"], 852);
    assert_eq!(card["gpu_busy_percent"], 4);
    assert_eq!(card["memory"]["vram_total_bytes"], 8_573_157_376_u64);
    assert_eq!(card["performance_level"], "manual");
    assert!(!json.to_string().contains("i915"));
    Ok(())
}
