//! nodectl never says "all clear" by mistake, ends quietly on a closed pipe, and never lets node or log text drive the terminal: one regression test per case that once went wrong.

#![allow(clippy::expect_used)]

use std::io::Read as _;
use std::process::{Command, Stdio};

use anyhow::Context as _;
use nodectl_e2e::harness::{binary, fixture, node_fixture, nodectl, nodectl_with};

#[test]
fn empty_binary_or_foreign_input_to_events_is_an_input_error_not_a_clean_node() -> anyhow::Result<()>
{
    let dir = tempfile::tempdir()?;
    let empty = dir.path().join("empty.log");
    std::fs::write(&empty, "")?;
    let run = nodectl(&["events", "--file", empty.to_str().context("path")?])?;
    assert_eq!(run.code, 2, "{}", run.stdout);
    assert!(run.stderr.contains("is empty"), "{}", run.stderr);
    assert!(!run.stdout.contains("No incidents"), "{}", run.stdout);

    // `talosctl dmesg | nodectl events --file -` with a talosctl that printed nothing.
    let run = nodectl_with(&["events", "--file", "-"], &[], Some(""))?;
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("standard input is empty"),
        "{}",
        run.stderr
    );

    let binary_file = dir.path().join("core");
    let bytes: Vec<u8> = (0..20_000u32).map(|i| (i * 7919 % 251) as u8).collect();
    std::fs::write(&binary_file, bytes)?;
    let run = nodectl(&["events", "--file", binary_file.to_str().context("path")?])?;
    assert_eq!(run.code, 2, "{}", run.stdout);
    assert!(
        run.stderr.contains("is a kernel log line"),
        "{}",
        run.stderr
    );

    let prose = "Dear diary,\ntoday the GPU was fine.\n";
    let run = nodectl_with(&["events", "--file", "-", "-o", "json"], &[], Some(prose))?;
    assert_eq!(run.code, 2, "{}", run.stdout);
    assert!(run.stderr.contains("none of the 2 lines"), "{}", run.stderr);

    // A real log says how much it read and recognised, and how many events it found.
    let run = nodectl(&[
        "events",
        "--file",
        fixture("kmsg/scenario.dmesg.log")
            .to_str()
            .context("path")?,
    ])?;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let counted = run
        .stdout
        .lines()
        .find(|l| l.contains("lines read"))
        .context("no count line")?;
    assert!(
        counted.ends_with("recognised as kernel log lines, format dmesg)."),
        "{counted}"
    );
    assert!(
        counted
            .split(' ')
            .next()
            .is_some_and(|n| n.parse::<u32>().is_ok()),
        "{counted}"
    );
    let run = nodectl(&[
        "events",
        "--file",
        fixture("kmsg/scenario.dmesg.log")
            .to_str()
            .context("path")?,
        "-o",
        "json",
    ])?;
    let json: serde_json::Value = serde_json::from_str(&run.stdout)?;
    assert!(json["input"]["lines_read"].as_u64() > Some(0));
    assert!(json["input"]["lines_recognised"].as_u64() > Some(0));
    Ok(())
}

#[test]
fn every_command_ends_quietly_when_its_output_closes() -> anyhow::Result<()> {
    let root = node_fixture("strix-halo-healthy");
    let root = root.to_str().context("path")?;
    let log = fixture("kmsg/scenario.kmsg.log");
    let log = log.to_str().context("path")?;
    for args in [
        vec!["--host-root", root, "node", "show"],
        vec!["--host-root", root, "node", "show", "-o", "json"],
        vec!["--host-root", root, "node", "check"],
        vec!["events", "--file", log],
    ] {
        // `| head -1`: the reader takes one line and goes away before the rest is written.
        let mut child = Command::new(binary("nodectl")?)
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let stdout = child.stdout.take().context("stdout")?;
        drop(stdout);
        let mut stderr = String::new();
        child
            .stderr
            .take()
            .context("stderr")?
            .read_to_string(&mut stderr)?;
        let status = child.wait()?;
        assert!(
            !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
            "{args:?}: {stderr}"
        );
        assert_ne!(status.code(), Some(101), "{args:?} panicked");
        assert!(status.code().is_some(), "{args:?} died of a signal");
    }
    Ok(())
}

#[test]
fn control_characters_from_a_log_are_shown_escaped() -> anyhow::Result<()> {
    let log = "[  1.000000] amdgpu 0000:c1:00.0: amdgpu: MES failed to respond to msg=REMOVE_QUEUE \u{1b}]0;owned\u{7}\u{1b}[2J\n";
    let run = nodectl_with(&["events", "--file", "-"], &[], Some(log))?;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(!run.stdout.contains('\u{1b}'), "raw ESC in {}", run.stdout);
    assert!(!run.stdout.contains('\u{7}'), "raw BEL in {}", run.stdout);
    assert!(
        run.stdout.contains(r"\u{1b}]0;owned\u{7}\u{1b}[2J"),
        "{}",
        run.stdout
    );
    // JSON keeps the text, escaped as JSON does.
    let run = nodectl_with(&["events", "--file", "-", "-o", "json"], &[], Some(log))?;
    let json: serde_json::Value = serde_json::from_str(&run.stdout)?;
    assert!(
        json["events"][0]["message"]
            .as_str()
            .is_some_and(|m| m.ends_with("\u{1b}[2J"))
    );
    Ok(())
}

/// A C1 control and bidi and zero-width characters in a kernel message: escaped in the table
/// (a line must not show other text than it holds), JSON and YAML escapes in `-o json|yaml`
/// that read back to the message itself.
#[test]
fn invisible_and_c1_characters_are_escaped_everywhere_and_read_back_from_json_and_yaml()
-> anyhow::Result<()> {
    let message = "amdgpu 0000:c1:00.0: amdgpu: MES failed to respond to msg=REMOVE_QUEUE \u{9b}31m \u{202e}lanif\u{202c} zero\u{200b}width";
    let log = format!("[  1.000000] {message}\n");
    let hidden = ['\u{9b}', '\u{202e}', '\u{202c}', '\u{200b}'];
    let run = nodectl_with(&["events", "--file", "-"], &[], Some(&log))?;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(!run.stdout.contains(hidden), "raw in {}", run.stdout);
    assert!(
        run.stdout
            .contains(r"\u{9b}31m \u{202e}lanif\u{202c} zero\u{200b}width"),
        "{}",
        run.stdout
    );
    let run = nodectl_with(&["events", "--file", "-", "-o", "json"], &[], Some(&log))?;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(!run.stdout.contains(hidden), "raw in {}", run.stdout);
    assert!(
        run.stdout.contains(r"\u009b31m \u202elanif\u202c"),
        "{}",
        run.stdout
    );
    let json: serde_json::Value = serde_json::from_str(&run.stdout)?;
    assert_eq!(json["events"][0]["message"], message);
    let run = nodectl_with(&["events", "--file", "-", "-o", "yaml"], &[], Some(&log))?;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(!run.stdout.contains(hidden), "raw in {}", run.stdout);
    let yaml: serde_json::Value = serde_saphyr::from_str(&run.stdout)?;
    assert_eq!(yaml["events"][0]["message"], message);
    Ok(())
}

#[test]
fn the_events_table_keeps_ids_and_times_whole_at_80_columns_and_when_piped() -> anyhow::Result<()> {
    let log = fixture("kmsg/scenario.talos.log");
    let log = log.to_str().context("path")?;
    let json = nodectl(&["events", "--file", log, "-o", "json"])?;
    let json: serde_json::Value = serde_json::from_str(&json.stdout)?;
    let events = json["events"].as_array().context("events")?;
    for columns in [Some("80"), None] {
        let env: Vec<(&str, &str)> = columns.iter().map(|c| ("COLUMNS", *c)).collect();
        let run = nodectl_with(&["events", "--file", log], &env, None)?;
        assert_eq!(run.code, 0, "{}", run.stderr);
        let width = columns.map_or(160, |c| c.parse().unwrap_or(80));
        let table: Vec<&str> = run
            .stdout
            .lines()
            .take_while(|l| !l.contains("lines read"))
            .collect();
        for line in &table {
            assert!(
                line.chars().count() <= width,
                "{} columns wide at {width}: {line}",
                line.chars().count()
            );
        }
        let table = table.join("\n");
        for event in events {
            let id = event["id"].as_str().context("id")?;
            assert!(table.contains(&format!(" {id} ")), "{id} split in\n{table}");
            let time = event["time"].as_str().context("time")?;
            let shown = time.get(..19).context("time")?.replace('T', " ");
            assert!(table.contains(&shown), "{shown} split in\n{table}");
        }
    }
    // Cut with a marker rather than laid out whole: a 2000-character message.
    let long = format!(
        "[  1.000000] amdgpu 0000:c1:00.0: amdgpu: GPU reset begin! {}\n",
        "x".repeat(2000)
    );
    let run = nodectl_with(
        &["events", "--file", "-"],
        &[("COLUMNS", "80")],
        Some(&long),
    )?;
    assert!(run.stdout.contains("… (+"), "{}", run.stdout);
    assert!(run.stdout.lines().all(|l| l.chars().count() <= 80));
    Ok(())
}

#[test]
fn a_host_root_that_is_no_host_is_an_input_error_naming_it() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("file");
    std::fs::write(&file, "")?;
    let missing = dir.path().join("missing");
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty)?;
    for (root, says) in [
        (&missing, "no such directory"),
        (&file, "not a directory"),
        (&empty, "has none of proc/, sys/ and dev/"),
    ] {
        let root = root.to_str().context("path")?;
        for command in [&["node", "show"][..], &["node", "check"], &["events"]] {
            let mut args = vec!["--host-root", root];
            args.extend_from_slice(command);
            let run = nodectl(&args)?;
            assert_eq!(run.code, 2, "{args:?}: {}", run.stdout);
            assert!(
                run.stderr
                    .starts_with(&format!("nodectl: --host-root {root}: {says}")),
                "{args:?}: {}",
                run.stderr
            );
            assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
            assert!(!run.stderr.contains("/dev/kmsg"), "{}", run.stderr);
        }
        let agent = Command::new(binary("nodectl-agent")?)
            .args(["--host-root", root, "--listen", "127.0.0.1:0"])
            .env("RUST_BACKTRACE", "1")
            .output()?;
        let stderr = String::from_utf8_lossy(&agent.stderr);
        assert_eq!(agent.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.starts_with(&format!("nodectl-agent: --host-root {root}: {says}")),
            "{stderr}"
        );
        assert!(!stderr.contains("backtrace"), "{stderr}");
    }
    // A tree with only part of a host still works.
    std::fs::create_dir(empty.join("sys"))?;
    let run = nodectl(&[
        "--host-root",
        empty.to_str().context("path")?,
        "node",
        "show",
    ])?;
    assert_eq!(run.code, 0, "{}", run.stderr);

    // --state-dir naming a file: said once, in words.
    let agent = Command::new(binary("nodectl-agent")?)
        .args(["--host-root", empty.to_str().context("path")?])
        .args(["--state-dir", file.to_str().context("path")?])
        .env("RUST_BACKTRACE", "1")
        .output()?;
    let stderr = String::from_utf8_lossy(&agent.stderr);
    assert_eq!(agent.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("not a directory"), "{stderr}");
    assert!(!stderr.contains("os error 17"), "{stderr}");
    Ok(())
}

#[test]
fn a_critical_check_that_could_not_run_is_unknown_with_its_own_exit_code() -> anyhow::Result<()> {
    let dir = nodectl_e2e::harness::node_fixture_copy("strix-halo-mes83")?;
    let root = dir.path().join("root");
    std::fs::write(
        root.join("sys/class/drm/card1/device/fw_version/mes_fw_version"),
        "0xZZ\n",
    )?;
    std::fs::remove_dir_all(root.join("sys/kernel/debug"))?;
    let root = root.to_str().context("path")?;
    let run = nodectl(&["--host-root", root, "node", "check"])?;
    assert_eq!(run.code, 4, "{}{}", run.stdout, run.stderr);
    assert!(!run.stdout.contains("no findings"), "{}", run.stdout);
    assert!(run.stdout.contains("unknown"), "{}", run.stdout);
    assert!(run.stdout.contains("mes_fw_version"), "{}", run.stdout);
    let run = nodectl(&["--host-root", root, "node", "check", "-o", "json"])?;
    assert_eq!(run.code, 4);
    let json: serde_json::Value = serde_json::from_str(&run.stdout)?;
    let mes = json["findings"]
        .as_array()
        .context("findings")?
        .iter()
        .find(|f| f["id"] == "mes_firmware_known_bad")
        .context("no mes finding")?;
    assert_eq!(mes["severity"], "unknown");
    assert_eq!(mes["severity_if_found"], "critical");

    // `node show` ends with the findings by severity and the command that lists them.
    let run = nodectl(&["--host-root", root, "node", "show"])?;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let last = run.stdout.lines().last().context("no output")?;
    assert!(last.contains("1 unknown"), "{last}");
    assert!(
        last.contains(&format!("`nodectl --host-root {root} node check`")),
        "{last}"
    );
    Ok(())
}

#[test]
fn uptime_reads_in_human_units_and_init_arguments_are_not_kernel_arguments() -> anyhow::Result<()> {
    let dir = nodectl_e2e::harness::node_fixture_copy("strix-halo-healthy")?;
    let root = dir.path().join("root");
    std::fs::write(root.join("proc/uptime"), "93784.21 180000.00\n")?;
    std::fs::write(
        root.join("proc/cmdline"),
        "BOOT_IMAGE=/vmlinuz amdgpu.cwsr_enable=0 -- single amdgpu.fake=1\n",
    )?;
    let root = root.to_str().context("path")?;
    let run = nodectl(&["--host-root", root, "node", "show"])?;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout
            .lines()
            .any(|l| l.contains("uptime") && l.contains("1 d 2 h")),
        "{}",
        run.stdout
    );
    let run = nodectl(&["--host-root", root, "node", "show", "-o", "json"])?;
    let json: serde_json::Value = serde_json::from_str(&run.stdout)?;
    let keys: Vec<&str> = json["host"]["kernel_arguments"]
        .as_array()
        .context("kernel_arguments")?
        .iter()
        .filter_map(|a| a["key"].as_str())
        .collect();
    assert_eq!(keys, ["BOOT_IMAGE", "amdgpu.cwsr_enable"]);
    Ok(())
}

#[test]
fn each_command_shows_and_takes_only_the_flags_it_uses() -> anyhow::Result<()> {
    let root = node_fixture("strix-halo-healthy");
    let root = root.to_str().context("path")?;
    // Accepted and ignored before: refused now, naming the flag and the command.
    let run = nodectl(&["--host-root", root, "cwsr", "status"])?;
    assert_eq!(run.code, 2);
    assert!(
        run.stderr
            .contains("--host-root does not apply to `cwsr status`"),
        "{}",
        run.stderr
    );
    let run = nodectl(&["--talosconfig", "/nowhere", "node", "show"])?;
    assert_eq!(run.code, 2);
    assert!(
        run.stderr
            .contains("--talosconfig does not apply to `node show`"),
        "{}",
        run.stderr
    );
    let run = nodectl(&[
        "--endpoint",
        "http://127.0.0.1:1",
        "talos",
        "apply-patch",
        "x.yaml",
    ])?;
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("does not apply to `talos apply-patch`"),
        "{}",
        run.stderr
    );
    // After the command's name as before it.
    let run = nodectl(&["node", "show", "--host-root", root])?;
    assert_eq!(run.code, 0, "{}", run.stderr);
    // Each help lists what its command uses.
    let help = |args: &[&str]| -> anyhow::Result<String> {
        let mut all = args.to_vec();
        all.push("--help");
        Ok(nodectl(&all)?.stdout)
    };
    let show = help(&["node", "show"])?;
    assert!(
        show.contains("--host-root") && !show.contains("--talosconfig"),
        "{show}"
    );
    assert!(show.contains("not Talos apid"), "{show}");
    let patch = help(&["talos", "apply-patch"])?;
    assert!(
        patch.contains("-n, --nodes") && !patch.contains("--endpoint"),
        "{patch}"
    );
    let status = help(&["cwsr", "status"])?;
    assert!(
        status.contains("--endpoint") && !status.contains("--host-root"),
        "{status}"
    );
    assert!(help(&[])?.contains("Exit codes: 0 ok"));
    Ok(())
}

#[test]
fn follow_with_summary_prints_the_counts_on_ctrl_c() -> anyhow::Result<()> {
    let tree = tempfile::tempdir()?;
    std::fs::create_dir_all(tree.path().join("dev"))?;
    std::fs::copy(
        fixture("kmsg/scenario.kmsg.log"),
        tree.path().join("dev/kmsg"),
    )?;
    let agent = nodectl_e2e::harness::Agent::start(tree.path(), &[])?;
    let output = tree.path().join("summary.txt");
    let mut child = Command::new(binary("nodectl")?)
        .args([
            "events",
            "--endpoint",
            &agent.endpoint,
            "--follow",
            "--summary",
        ])
        .stdout(std::fs::File::create(&output)?)
        .stderr(Stdio::piped())
        .spawn()?;
    // The history arrives at once; then Ctrl-C.
    std::thread::sleep(std::time::Duration::from_secs(2));
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id())?);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT)?;
    let status = child.wait()?;
    let printed = std::fs::read_to_string(&output)?;
    assert_eq!(status.code(), Some(0), "{printed}");
    assert!(printed.contains("CLASS/ID"), "{printed}");
    assert!(printed.contains("hang/mes_timeout"), "{printed}");
    Ok(())
}

#[test]
fn a_meminfo_without_a_field_loses_only_that_field_and_says_which() -> anyhow::Result<()> {
    let dir = nodectl_e2e::harness::node_fixture_copy("strix-halo-healthy")?;
    let root = dir.path().join("root");
    std::fs::write(
        root.join("proc/meminfo"),
        "MemTotal:       131072000 kB\nMemFree:         1000000 kB\n",
    )?;
    let run = nodectl(&[
        "--host-root",
        root.to_str().context("path")?,
        "node",
        "show",
        "-o",
        "json",
    ])?;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let json: serde_json::Value = serde_json::from_str(&run.stdout)?;
    assert_eq!(json["host"]["mem_total_bytes"], 131_072_000u64 * 1024);
    assert!(json["host"]["mem_available_bytes"].is_null());
    let problems = json["problems"].to_string();
    assert!(problems.contains("no MemAvailable line"), "{problems}");
    assert!(!problems.contains("Internal error"), "{problems}");
    Ok(())
}
