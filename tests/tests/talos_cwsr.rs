//! End to end: the real `nodectl` binary runs `cwsr status|disable|enable` and `talos apply-patch` against fake Talos nodes.
//!
//! Each fake node (apid over mutual TLS and an Image Factory, on loopback) records every call,
//! so the tests check both what nodectl reports and what it actually sent.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use nodectl_e2e::fake_talos::pki::talosconfig_text;
use nodectl_e2e::fake_talos::{ApidCall, FakeTalos, Role, Scenario};
use nodectl_e2e::harness::{Run, nodectl_with, workspace_root};
use nodectl_proto::machine::apply_configuration_request::Mode;

const CWSR_OFF: &str = "amdgpu.cwsr_enable=0";

/// Runs nodectl on a blocking thread (the fake node keeps serving on the test's runtime).
async fn run(args: Vec<String>, home: &Path) -> Run {
    let home = home.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let home = home.to_string_lossy().into_owned();
        // HOME points at an empty folder: no talosconfig of the machine running the tests leaks in.
        nodectl_with(&args, &[("HOME", home.as_str()), ("NO_COLOR", "1")], None)
    })
    .await
    .unwrap()
    .unwrap()
}

/// `nodectl --talosconfig F <args>`, as an `os:admin` unless another talosconfig is given.
async fn nodectl_on(fake: &FakeTalos, talosconfig: &Path, args: &[&str]) -> Run {
    let mut all = vec![
        "--talosconfig".to_owned(),
        talosconfig.to_string_lossy().into_owned(),
    ];
    all.extend(args.iter().map(|a| (*a).to_owned()));
    let run = run(all, talosconfig.parent().unwrap()).await;
    eprintln!(
        "nodectl {args:?} → exit {}\n--- stdout\n{}\n--- stderr\n{}",
        run.code, run.stdout, run.stderr
    );
    // Whatever happened, the node must be up again before the test looks at it.
    fake.wait_until_up(Duration::from_secs(30)).await.unwrap();
    run
}

async fn start(scenario: Scenario) -> (FakeTalos, std::path::PathBuf) {
    let fake = FakeTalos::start(scenario).await.unwrap();
    let admin = fake.talosconfig(Role::Admin).unwrap();
    (fake, admin)
}

fn cwsr(action: &str, fake: &FakeTalos, extra: &[&str]) -> Vec<String> {
    let mut args = vec![
        "cwsr".to_owned(),
        action.to_owned(),
        "--factory".to_owned(),
        fake.factory.url(),
        "--timeout".to_owned(),
        "60s".to_owned(),
    ];
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    args
}

async fn cwsr_run(fake: &FakeTalos, talosconfig: &Path, action: &str, extra: &[&str]) -> Run {
    let args = cwsr(action, fake, extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    nodectl_on(fake, talosconfig, &args).await
}

fn count(haystack: &str, needle: &str) -> usize {
    haystack.split_whitespace().filter(|a| *a == needle).count()
}

/// What every run against the fake must respect: never mode REBOOT, always one node in metadata.
fn assert_contract(calls: &[ApidCall]) {
    for call in calls {
        assert_ne!(
            call.mode,
            Some(Mode::Reboot),
            "nodectl sent mode REBOOT: {call:?}"
        );
        assert_eq!(
            call.node.as_deref(),
            Some("127.0.0.1"),
            "call without `node` metadata: {call:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uki_node_disable_verify_idempotent_and_enable() {
    let (fake, admin) = start(Scenario::uki()).await;
    let original = fake.node();
    let original_schematic = fake
        .factory
        .state
        .schematic(&original.schematic_id)
        .unwrap();

    let disabled = cwsr_run(&fake, &admin, "disable", &["--yes"]).await;
    assert_eq!(disabled.code, 0, "cwsr disable must end verified");
    let node = fake.node();
    assert_eq!(node.cwsr_enable(), "0");
    assert_eq!(count(&node.cmdline, CWSR_OFF), 1);
    assert_eq!(
        node.talos_version, original.talos_version,
        "a no-op upgrade keeps the version"
    );
    // The new schematic keeps every extension and argument, plus the one argument.
    let schematic = fake.factory.state.schematic(&node.schematic_id).unwrap();
    assert_eq!(
        schematic.customization.system_extensions,
        original_schematic.customization.system_extensions
    );
    let mut expected_args = original_schematic.customization.extra_kernel_args.clone();
    expected_args.push(CWSR_OFF.to_owned());
    assert_eq!(schematic.customization.extra_kernel_args, expected_args);
    // UKI path: schematic + upgrade, no config apply.
    let writes = fake.writes();
    assert!(
        writes.iter().all(|c| c.method != "ApplyConfiguration"),
        "{writes:?}"
    );
    let upgrades: Vec<_> = writes.iter().filter(|c| c.method == "Upgrade").collect();
    assert_eq!(upgrades.len(), 1);
    assert_eq!(
        upgrades[0].image.as_deref(),
        Some(
            format!(
                "{}/metal-installer/{}:v1.12.1",
                fake.factory.host(),
                node.schematic_id
            )
            .as_str()
        )
    );
    assert_eq!(fake.factory_posts().len(), 1);
    let post = &fake.factory_posts()[0];
    assert_eq!(post.status, 201);
    assert_eq!(post.content_type.as_deref(), Some("application/yaml"));

    // A second run finds the wanted state and changes nothing.
    let (writes_before, posts_before) = (fake.writes().len(), fake.factory_posts().len());
    let again = cwsr_run(&fake, &admin, "disable", &["--yes"]).await;
    assert_eq!(again.code, 0);
    assert_eq!(
        fake.writes().len(),
        writes_before,
        "second disable wrote to the node"
    );
    assert_eq!(
        fake.factory_posts().len(),
        posts_before,
        "second disable posted a schematic"
    );

    // Enable reverts: the schematic without the argument is the original one again.
    let enabled = cwsr_run(&fake, &admin, "enable", &["--yes"]).await;
    assert_eq!(enabled.code, 0, "cwsr enable must end verified");
    let node = fake.node();
    assert_eq!(node.cwsr_enable(), "1");
    assert_eq!(count(&node.cmdline, CWSR_OFF), 0);
    assert_eq!(node.schematic_id, original.schematic_id);
    assert_eq!(node.cmdline, original.cmdline);
    assert_contract(&fake.calls());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_grub_node_disable_verify_idempotent_and_enable() {
    let (fake, admin) = start(Scenario::legacy_grub()).await;
    let original = fake.node();

    let disabled = cwsr_run(&fake, &admin, "disable", &["--yes"]).await;
    assert_eq!(disabled.code, 0, "cwsr disable must end verified");
    let node = fake.node();
    assert_eq!(node.cwsr_enable(), "0");
    assert_eq!(count(&node.cmdline, CWSR_OFF), 1);
    let args = node.persistent.extra_kernel_args();
    assert_eq!(
        args.iter().filter(|a| *a == CWSR_OFF).count(),
        1,
        "{args:?}"
    );
    assert!(
        args.iter().any(|a| a == "amd_iommu=off"),
        "existing arguments kept: {args:?}"
    );
    // The other document of the multi-document config survives the edit.
    assert!(node.persistent.text.contains("kind: KmsgLogConfig"));
    // Legacy path: extraKernelArgs applied with NO_REBOOT, then a no-op upgrade to the same schematic.
    let writes = fake.writes();
    let methods: Vec<&str> = writes.iter().map(|c| c.method.as_str()).collect();
    assert_eq!(methods, ["ApplyConfiguration", "Upgrade"], "{writes:?}");
    assert_eq!(writes[0].mode, Some(Mode::NoReboot));
    assert_eq!(
        writes[1].image.as_deref(),
        Some(
            format!(
                "{}/metal-installer/{}:v1.11.5",
                fake.factory.host(),
                original.schematic_id
            )
            .as_str()
        )
    );
    assert!(
        fake.factory_posts().is_empty(),
        "legacy GRUB needs no new schematic"
    );

    let writes_before = fake.writes().len();
    let again = cwsr_run(&fake, &admin, "disable", &["--yes"]).await;
    assert_eq!(again.code, 0);
    assert_eq!(
        fake.writes().len(),
        writes_before,
        "second disable wrote to the node"
    );

    let enabled = cwsr_run(&fake, &admin, "enable", &["--yes"]).await;
    assert_eq!(enabled.code, 0, "cwsr enable must end verified");
    let node = fake.node();
    assert_eq!(node.cwsr_enable(), "1");
    assert_eq!(count(&node.cmdline, CWSR_OFF), 0);
    assert!(
        !node
            .persistent
            .extra_kernel_args()
            .iter()
            .any(|a| a.contains("cwsr_enable"))
    );
    assert_eq!(node.cmdline, original.cmdline);
    assert_contract(&fake.calls());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grub_with_uki_cmdline_goes_through_the_schematic() {
    let (fake, admin) = start(Scenario::grub_uki_cmdline()).await;
    let disabled = cwsr_run(&fake, &admin, "disable", &["--yes"]).await;
    assert_eq!(disabled.code, 0);
    assert_eq!(fake.node().cwsr_enable(), "0");
    // extraKernelArgs beside grubUseUKICmdline would be refused; the schematic route was taken.
    assert!(
        fake.writes()
            .iter()
            .all(|c| c.method != "ApplyConfiguration")
    );
    assert_eq!(fake.factory_posts().len(), 1);
    assert_contract(&fake.calls());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_changes_nothing_on_either_boot_path() {
    for scenario in [Scenario::uki(), Scenario::legacy_grub()] {
        let (fake, admin) = start(scenario).await;
        let before = fake.node();
        for action in ["disable", "enable"] {
            let planned = cwsr_run(&fake, &admin, action, &["--dry-run"]).await;
            assert_eq!(planned.code, 0);
            assert!(
                !planned.stdout.trim().is_empty(),
                "--dry-run prints the plan"
            );
        }
        let disable = cwsr_run(&fake, &admin, "disable", &["--dry-run", "--yes"]).await;
        assert_eq!(disable.code, 0);
        assert!(
            fake.writes().is_empty(),
            "--dry-run wrote: {:?}",
            fake.writes()
        );
        assert!(
            fake.factory_posts().is_empty(),
            "--dry-run posted a schematic"
        );
        let after = fake.node();
        assert_eq!(after.cmdline, before.cmdline);
        assert_eq!(after.running.text, before.running.text);
        assert_eq!(after.persistent.text, before.persistent.text);
        assert_eq!(after.boots, before.boots);
        assert_contract(&fake.calls());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_without_yes_and_without_a_terminal_is_refused() {
    let (fake, admin) = start(Scenario::uki()).await;
    let refused = cwsr_run(&fake, &admin, "disable", &[]).await;
    assert_eq!(refused.code, 2);
    assert!(refused.stderr.contains("--yes"), "{}", refused.stderr);
    assert!(fake.writes().is_empty());
    assert!(fake.factory_posts().is_empty());
}

async fn status_json(fake: &FakeTalos, talosconfig: &Path) -> serde_json::Value {
    let factory = fake.factory.url();
    let status = nodectl_on(
        fake,
        talosconfig,
        &["-o", "json", "cwsr", "status", "--factory", &factory],
    )
    .await;
    assert_eq!(status.code, 0, "{}", status.stderr);
    serde_json::from_str(&status.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_as_json_follows_the_node_through_disable() {
    for scenario in [Scenario::uki(), Scenario::legacy_grub()] {
        let (fake, admin) = start(scenario).await;
        let node = fake.node();
        let before = status_json(&fake, &admin).await;
        assert_eq!(before["node"], "127.0.0.1");
        assert_eq!(before["talos_version"], node.talos_version.as_str());
        assert_eq!(before["schematic_id"], node.schematic_id.as_str());
        assert_eq!(
            before["boot_path"] == "uki",
            node.booted_with_uki,
            "{before}"
        );
        assert_eq!(
            before["extensions"],
            serde_json::json!(["amd-ucode", "amdgpu"])
        );
        assert_eq!(before["effective"]["cwsr_enable"], "1");
        assert_eq!(before["effective"]["cwsr_disabled"], false);
        assert_eq!(before["configured"]["cwsr_disabled"], false, "{before}");
        assert!(fake.writes().is_empty(), "status wrote to the node");

        let disabled = cwsr_run(&fake, &admin, "disable", &["--yes"]).await;
        assert_eq!(disabled.code, 0);
        let after = status_json(&fake, &admin).await;
        assert_eq!(after["schematic_id"], fake.node().schematic_id.as_str());
        assert_eq!(after["effective"]["cwsr_enable"], "0");
        assert_eq!(after["effective"]["cwsr_disabled"], true);
        assert_eq!(after["configured"]["cwsr_disabled"], true, "{after}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_patch_in_each_mode() {
    let (fake, admin) = start(Scenario::legacy_grub()).await;
    let dir = admin.parent().unwrap();
    let cases = [
        ("no-reboot", Mode::NoReboot),
        ("auto", Mode::Auto),
        ("try", Mode::Try),
        ("staged", Mode::Staged),
    ];
    for (mode_flag, mode) in cases {
        let label = format!("nodectl.test/{mode_flag}");
        let patch = dir.join(format!("label-{mode_flag}.yaml"));
        std::fs::write(
            &patch,
            format!("machine:\n  nodeLabels:\n    {label}: \"yes\"\n"),
        )
        .unwrap();
        let patch = patch.to_string_lossy().into_owned();

        let planned = nodectl_on(
            &fake,
            &admin,
            &[
                "talos",
                "apply-patch",
                &patch,
                "--mode",
                mode_flag,
                "--dry-run",
            ],
        )
        .await;
        assert_eq!(planned.code, 0);
        assert!(
            fake.writes().iter().all(|c| c.mode != Some(mode)),
            "--dry-run wrote with {mode_flag}"
        );

        let applied = nodectl_on(
            &fake,
            &admin,
            &["talos", "apply-patch", &patch, "--mode", mode_flag, "--yes"],
        )
        .await;
        assert_eq!(applied.code, 0, "apply-patch --mode {mode_flag}");
        let sent: Vec<_> = fake
            .writes()
            .into_iter()
            .filter(|c| c.method == "ApplyConfiguration" && c.mode == Some(mode))
            .collect();
        assert_eq!(sent.len(), 1, "one apply with mode {mode_flag}");
        let node = fake.node();
        assert!(node.persistent.text.contains(&label) || mode == Mode::Try);
        match mode {
            Mode::Staged => assert!(
                !node.running.text.contains(&label),
                "STAGED is not active yet"
            ),
            _ => assert!(node.running.text.contains(&label), "{mode_flag} is active"),
        }
        // The rest of the config is untouched: still the multi-document legacy config.
        assert!(node.running.text.contains("kind: KmsgLogConfig"));
        assert!(
            node.running
                .extra_kernel_args()
                .contains(&"amd_iommu=off".to_owned())
        );
    }
    assert_contract(&fake.calls());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_certificate_is_told_it_needs_os_admin() {
    let (fake, _admin) = start(Scenario::uki()).await;
    let reader = fake.talosconfig(Role::Reader).unwrap();
    let refused = cwsr_run(&fake, &reader, "disable", &["--yes"]).await;
    assert_eq!(refused.code, 2);
    assert!(refused.stderr.contains("os:admin"), "{}", refused.stderr);
    assert!(fake.writes().iter().all(|c| c.error.is_some()));
    assert!(fake.factory_posts().is_empty());
    assert_eq!(fake.node().cwsr_enable(), "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_node_exits_3() {
    let (fake, _admin) = start(Scenario::uki()).await;
    // A loopback port nothing listens on any more.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let client = fake.pki.client(Role::Admin).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let talosconfig = dir.path().join("talosconfig");
    std::fs::write(
        &talosconfig,
        talosconfig_text(&fake.pki.ca_pem, &client, closed),
    )
    .unwrap();
    let factory = fake.factory.url();
    let status = nodectl_on(
        &fake,
        &talosconfig,
        &["cwsr", "status", "--factory", &factory],
    )
    .await;
    assert_eq!(status.code, 3, "{}", status.stderr);
    let disable = cwsr_run(&fake, &talosconfig, "disable", &["--yes"]).await;
    assert_eq!(disable.code, 3, "{}", disable.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_factory_exits_3_and_changes_nothing() {
    let (fake, admin) = start(Scenario::uki()).await;
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let run = nodectl_on(
        &fake,
        &admin,
        &[
            "cwsr",
            "disable",
            "--yes",
            "--factory",
            &format!("http://{closed}"),
            "--timeout",
            "60s",
        ],
    )
    .await;
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(fake.writes().is_empty());
    assert_eq!(fake.node().cwsr_enable(), "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_factory_error_body_is_shown_and_exits_2() {
    let (fake, admin) = start(Scenario::uki()).await;
    // The factory has never seen the node's schematic: GET answers 404 with a plain-text body.
    fake.factory.state.forget(&fake.node().schematic_id);
    let run = cwsr_run(&fake, &admin, "disable", &["--yes"]).await;
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("not found"), "{}", run.stderr);
    assert!(fake.writes().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_stays_down_past_the_timeout_exits_3() {
    let mut scenario = Scenario::legacy_grub();
    scenario.reboot_duration = Duration::from_secs(8);
    let (fake, admin) = start(scenario).await;
    let args = vec![
        "--talosconfig".to_owned(),
        admin.to_string_lossy().into_owned(),
        "cwsr".to_owned(),
        "disable".to_owned(),
        "--yes".to_owned(),
        "--factory".to_owned(),
        fake.factory.url(),
        "--timeout".to_owned(),
        "1s".to_owned(),
    ];
    let run = run(args, admin.parent().unwrap()).await;
    assert_eq!(run.code, 3, "{}", run.stderr);
    // The upgrade was sent; the node comes back on its own with the argument.
    let node = fake.wait_until_up(Duration::from_secs(30)).await.unwrap();
    assert_eq!(node.cwsr_enable(), "0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_legacy_grub_patches_apply_then_a_no_op_upgrade_takes_them_in() {
    let (fake, admin) = start(Scenario::legacy_grub()).await;
    let disable = workspace_root().join("talos-patches/cwsr-disable.legacy-grub.yaml");
    let enable = workspace_root().join("talos-patches/cwsr-enable.legacy-grub.yaml");
    let (disable, enable) = (disable.to_string_lossy(), enable.to_string_lossy());

    let applied = nodectl_on(
        &fake,
        &admin,
        &[
            "talos",
            "apply-patch",
            &disable,
            "--mode",
            "no-reboot",
            "--yes",
        ],
    )
    .await;
    assert_eq!(applied.code, 0);
    let node = fake.node();
    assert!(
        node.persistent
            .extra_kernel_args()
            .contains(&CWSR_OFF.to_owned())
    );
    // Accepted "without a reboot", yet nothing changes at runtime until an upgrade.
    assert_eq!(node.cwsr_enable(), "1");
    upgrade_in_place(&fake).await;
    assert_eq!(fake.node().cwsr_enable(), "0");

    let reverted = nodectl_on(
        &fake,
        &admin,
        &[
            "talos",
            "apply-patch",
            &enable,
            "--mode",
            "no-reboot",
            "--yes",
        ],
    )
    .await;
    assert_eq!(reverted.code, 0);
    assert!(fake.node().persistent.extra_kernel_args().is_empty());
    upgrade_in_place(&fake).await;
    assert_eq!(fake.node().cwsr_enable(), "1");
    assert_contract(&fake.calls());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_legacy_patch_on_a_grub_uki_cmdline_node_is_refused_with_apids_text() {
    let (fake, admin) = start(Scenario::grub_uki_cmdline()).await;
    let before = fake.node();
    let disable = workspace_root().join("talos-patches/cwsr-disable.legacy-grub.yaml");
    let refused = nodectl_on(
        &fake,
        &admin,
        &[
            "talos",
            "apply-patch",
            &disable.to_string_lossy(),
            "--mode",
            "no-reboot",
            "--yes",
        ],
    )
    .await;
    assert_eq!(refused.code, 2);
    assert!(
        refused.stderr.contains(
            "install.extraKernelArgs and install.grubUseUKICmdline can't be used together"
        ),
        "{}",
        refused.stderr
    );
    assert_eq!(fake.node().persistent.text, before.persistent.text);
}

/// A same-version upgrade to the node's own schematic, as an operator would run it by hand.
async fn upgrade_in_place(fake: &FakeTalos) {
    use nodectl_proto::machine::UpgradeRequest;
    use nodectl_proto::machine::machine_service_client::MachineServiceClient;
    let node = fake.node();
    let mut client = MachineServiceClient::new(fake.channel(Some(Role::Admin)).await.unwrap());
    let mut request = tonic::Request::new(UpgradeRequest {
        image: format!(
            "{}/metal-installer/{}:{}",
            fake.factory.host(),
            node.schematic_id,
            node.talos_version
        ),
        ..Default::default()
    });
    request.metadata_mut().insert(
        "node",
        tonic::metadata::MetadataValue::from_static("127.0.0.1"),
    );
    client.upgrade(request).await.unwrap();
    let boots = node.boots;
    for _ in 0..600 {
        let now = fake.node();
        if now.up && now.boots > boots {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the node did not come back from the upgrade");
}

fn kernel_arg(action: &str, arg: &str, fake: &FakeTalos, extra: &[&str]) -> Vec<String> {
    let mut args = vec![
        "talos".to_owned(),
        "kernel-arg".to_owned(),
        action.to_owned(),
        arg.to_owned(),
        "--factory".to_owned(),
        fake.factory.url(),
        "--timeout".to_owned(),
        "60s".to_owned(),
    ];
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    args
}

async fn json_run(fake: &FakeTalos, talosconfig: &Path, args: Vec<String>) -> serde_json::Value {
    let mut all = vec!["-o".to_owned(), "json".to_owned()];
    all.extend(args);
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    let run = nodectl_on(fake, talosconfig, &all).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    serde_json::from_str(&run.stdout).unwrap()
}

fn steps(plan: &serde_json::Value) -> Vec<&str> {
    plan["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_str().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_runs_print_the_plan_as_json_on_every_boot_path() {
    for (scenario, boot_path, first_step) in [
        (Scenario::uki(), "uki", "post_schematic"),
        (
            Scenario::legacy_grub(),
            "legacy-grub",
            "apply_configuration",
        ),
        (
            Scenario::grub_uki_cmdline(),
            "grub-uki-cmdline",
            "post_schematic",
        ),
    ] {
        let (fake, admin) = start(scenario).await;
        let node = fake.node();
        for (args, argument) in [
            (
                cwsr("disable", &fake, &["--dry-run"]),
                "amdgpu.cwsr_enable=0",
            ),
            (
                kernel_arg("set", "amdgpu.gpu_recovery=1", &fake, &["--dry-run"]),
                "amdgpu.gpu_recovery=1",
            ),
        ] {
            let json = json_run(&fake, &admin, args).await;
            assert_eq!(json["dry_run"], true, "{json}");
            let plan = &json["plan"];
            assert_eq!(plan["boot_path"], boot_path, "{json}");
            assert_eq!(plan["node"], "127.0.0.1");
            assert_eq!(plan["talos_version"], node.talos_version.as_str());
            assert_eq!(plan["schematic_id"], node.schematic_id.as_str());
            assert_eq!(plan["change"]["argument"], argument);
            assert_eq!(plan["change"]["action"], "set");
            assert_eq!(plan["up_to_date"], false);
            assert_eq!(
                steps(plan),
                [first_step, "upgrade", "wait_for_reboot", "read_back"],
                "{json}"
            );
            let diff = plan["steps"][0]["diff"].as_str().unwrap();
            let added = format!("- {argument}");
            assert!(
                diff.lines()
                    .any(|l| l.starts_with('+') && l[1..].trim() == added),
                "{diff}"
            );
            let upgrade = &plan["steps"][1];
            assert_eq!(upgrade["new_schematic"], boot_path != "legacy-grub");
            if boot_path == "legacy-grub" {
                // apid was asked for its dry-run answer; the installer is the node's own.
                assert!(json["apid_dry_run"]["summary"].is_string(), "{json}");
                assert_eq!(
                    upgrade["image"],
                    format!(
                        "{}/metal-installer/{}:{}",
                        fake.factory.host(),
                        node.schematic_id,
                        node.talos_version
                    )
                );
            }
        }
        assert!(
            fake.writes().is_empty(),
            "--dry-run wrote: {:?}",
            fake.writes()
        );
        assert!(
            fake.factory_posts().is_empty(),
            "--dry-run posted a schematic"
        );
        assert_contract(&fake.calls());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kernel_arg_set_and_remove_verify_on_both_boot_paths() {
    for scenario in [Scenario::uki(), Scenario::legacy_grub()] {
        let (fake, admin) = start(scenario).await;
        let original = fake.node();
        let set = json_run(
            &fake,
            &admin,
            kernel_arg("set", "amdgpu.gpu_recovery=1", &fake, &["--yes"]),
        )
        .await;
        assert_eq!(set["result"]["verified"], true, "{set}");
        assert_eq!(set["result"]["parameter"], "1");
        let node = fake.node();
        assert_eq!(count(&node.cmdline, "amdgpu.gpu_recovery=1"), 1);
        assert_eq!(node.talos_version, original.talos_version);

        // Again: nothing to do, nothing written.
        let writes = fake.writes().len();
        let again = json_run(
            &fake,
            &admin,
            kernel_arg("set", "amdgpu.gpu_recovery=1", &fake, &["--yes"]),
        )
        .await;
        assert_eq!(again["plan"]["up_to_date"], true, "{again}");
        assert_eq!(fake.writes().len(), writes);

        // A bare key removes every value of it.
        let removed = json_run(
            &fake,
            &admin,
            kernel_arg("remove", "amdgpu.gpu_recovery", &fake, &["--yes"]),
        )
        .await;
        assert_eq!(removed["result"]["verified"], true, "{removed}");
        assert!(!fake.node().cmdline.contains("amdgpu.gpu_recovery"));
        assert_eq!(fake.node().cmdline, original.cmdline);
        assert_contract(&fake.calls());
    }
}
