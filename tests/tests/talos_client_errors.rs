//! End to end: the errors `nodectl talos apply-patch` and `nodectl cwsr` give before or instead of
//! writing (JSON6902 on a multi-document config, a bad patch file, a missing talosconfig, a
//! factory refusing the schematic), each with its exit code and nothing written to the node.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use nodectl_e2e::fake_talos::{FakeTalos, Role, Scenario};
use nodectl_e2e::harness::{Run, nodectl_with};

async fn run(args: Vec<String>, home: &Path) -> Run {
    let home = home.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let home = home.to_string_lossy().into_owned();
        nodectl_with(&args, &[("HOME", home.as_str()), ("TALOSCONFIG", "")], None)
    })
    .await
    .unwrap()
    .unwrap()
}

async fn apply_patch(fake: &FakeTalos, patch_name: &str, patch: &str) -> Run {
    let talosconfig = fake.talosconfig(Role::Admin).unwrap();
    let dir = talosconfig.parent().unwrap().to_path_buf();
    let file = dir.join(patch_name);
    std::fs::write(&file, patch).unwrap();
    let args = vec![
        "--talosconfig".to_owned(),
        talosconfig.to_string_lossy().into_owned(),
        "talos".to_owned(),
        "apply-patch".to_owned(),
        file.to_string_lossy().into_owned(),
        "--yes".to_owned(),
    ];
    let run = run(args, &dir).await;
    eprintln!("exit {}\n{}\n{}", run.code, run.stdout, run.stderr);
    run
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json6902_on_a_multi_document_config_is_refused_with_talos_words() {
    let fake = FakeTalos::start(Scenario::uki()).await.unwrap();
    let run = apply_patch(
        &fake,
        "ops.json",
        r#"[{"op": "add", "path": "/machine/nodeLabels/x", "value": "y"}]"#,
    )
    .await;
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains(
            "JSON6902 patches are not supported for multi-document machine configuration"
        ),
        "{}",
        run.stderr
    );
    assert!(fake.writes().is_empty(), "{:?}", fake.writes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patch_that_is_not_a_patch_names_the_file_and_writes_nothing() {
    let fake = FakeTalos::start(Scenario::legacy_grub()).await.unwrap();
    let run = apply_patch(&fake, "broken.yaml", "- 1\n- 2\n").await;
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("broken.yaml"), "{}", run.stderr);
    let run = apply_patch(
        &fake,
        "unknown.yaml",
        "machine:\n  install:\n    $patch: replace\n",
    )
    .await;
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("$patch: replace"), "{}", run.stderr);
    assert!(fake.writes().is_empty(), "{:?}", fake.writes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patch_that_changes_nothing_is_not_sent() {
    let fake = FakeTalos::start(Scenario::legacy_grub()).await.unwrap();
    let run = apply_patch(
        &fake,
        "same.yaml",
        "machine:\n  install:\n    wipe: false\n",
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("nothing to apply"), "{}", run.stdout);
    assert!(fake.writes().is_empty(), "{:?}", fake.writes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_talosconfig_anywhere_says_how_to_give_one() {
    let home = tempfile::tempdir().unwrap();
    let run = run(vec!["cwsr".to_owned(), "status".to_owned()], home.path()).await;
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("--talosconfig"), "{}", run.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_factory_that_does_not_know_the_schematic_is_reported_with_its_body() {
    let fake = FakeTalos::start(Scenario::uki()).await.unwrap();
    let talosconfig = fake.talosconfig(Role::Admin).unwrap();
    let dir = talosconfig.parent().unwrap().to_path_buf();
    // A second, empty factory: it has never seen the node's schematic.
    let other = FakeTalos::start(Scenario::legacy_grub()).await.unwrap();
    let args = vec![
        "--talosconfig".to_owned(),
        talosconfig.to_string_lossy().into_owned(),
        "cwsr".to_owned(),
        "disable".to_owned(),
        "--yes".to_owned(),
        "--factory".to_owned(),
        other.factory.url(),
    ];
    let run = run(args, &dir).await;
    eprintln!("exit {}\n{}\n{}", run.code, run.stdout, run.stderr);
    if fake.node().schematic_id == other.node().schematic_id {
        eprintln!("SKIPPED: both fake nodes run the same schematic");
        return;
    }
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("404"), "{}", run.stderr);
    assert!(run.stderr.contains("--factory"), "{}", run.stderr);
    assert!(fake.writes().is_empty(), "{:?}", fake.writes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apid_certificate_from_another_ca_is_said_in_words_once() {
    let fake = FakeTalos::start(Scenario::legacy_grub()).await.unwrap();
    let talosconfig = fake.talosconfig(Role::Admin).unwrap();
    let dir = talosconfig.parent().unwrap().to_path_buf();
    // The same client, trusting another cluster's CA.
    let other = nodectl_e2e::fake_talos::pki::Pki::generate().unwrap();
    use base64::Engine as _;
    let b64 = |text: &str| base64::engine::general_purpose::STANDARD.encode(text.as_bytes());
    let text = std::fs::read_to_string(&talosconfig).unwrap();
    let ca_line = text
        .lines()
        .find(|l| l.trim_start().starts_with("ca: "))
        .unwrap()
        .to_owned();
    let indent = &ca_line[..ca_line.len() - ca_line.trim_start().len()];
    let wrong = dir.join("wrong-ca.yaml");
    std::fs::write(
        &wrong,
        text.replace(&ca_line, &format!("{indent}ca: {}", b64(&other.ca_pem))),
    )
    .unwrap();
    let args = vec![
        "--talosconfig".to_owned(),
        wrong.to_string_lossy().into_owned(),
        "cwsr".to_owned(),
        "status".to_owned(),
    ];
    let run = run(args, &dir).await;
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("its certificate is not signed by the talosconfig context's `ca`"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("UnknownIssuer"), "{}", run.stderr);
    assert_eq!(
        run.stderr.matches("TLS handshake").count(),
        1,
        "{}",
        run.stderr
    );
}
