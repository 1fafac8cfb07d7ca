//! End to end: `nodectl cwsr status --endpoint URL` takes the effective value from the node agent
//! (a real agent on a fixture tree) while the Talos facts come from apid, and falls back on
//! Talos Read, saying so, when the agent cannot be reached.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use nodectl_e2e::fake_talos::{FakeTalos, Role, Scenario};
use nodectl_e2e::harness::{Agent, Run, node_fixture, nodectl_with};

async fn status(talosconfig: &Path, factory: &str, endpoint: Option<&str>) -> serde_json::Value {
    let mut args = vec![
        "--talosconfig".to_owned(),
        talosconfig.to_string_lossy().into_owned(),
        "-o".to_owned(),
        "json".to_owned(),
    ];
    if let Some(endpoint) = endpoint {
        args.push("--endpoint".to_owned());
        args.push(endpoint.to_owned());
    }
    args.extend(["cwsr", "status", "--factory", factory].map(str::to_owned));
    let home = talosconfig.parent().unwrap().to_string_lossy().into_owned();
    let run: Run = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        nodectl_with(&args, &[("HOME", home.as_str())], None)
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(run.code, 0, "{}", run.stderr);
    serde_json::from_str(&run.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_supplies_the_effective_value_when_given() {
    let fake = FakeTalos::start(Scenario::uki()).await.unwrap();
    let talosconfig = fake.talosconfig(Role::Admin).unwrap();
    let factory = fake.factory.url();

    let from_talos = status(&talosconfig, &factory, None).await;
    assert_eq!(from_talos["effective"]["source"], "talos-read");
    assert_eq!(from_talos["effective"]["cwsr_enable"], "1");

    // The healthy fixture runs with cwsr_enable=0, unlike the fake node: the value shows where
    // the answer came from.
    let agent = Agent::start(&node_fixture("strix-halo-healthy"), &[]).unwrap();
    let from_agent = status(&talosconfig, &factory, Some(&agent.endpoint)).await;
    assert_eq!(from_agent["effective"]["source"], "agent", "{from_agent}");
    assert_eq!(from_agent["effective"]["cwsr_enable"], "0");
    assert_eq!(from_agent["effective"]["cwsr_disabled"], true);
    assert_eq!(from_agent["talos_version"], from_talos["talos_version"]);
    agent.terminate().unwrap();

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nobody = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let fallback = status(&talosconfig, &factory, Some(&nobody)).await;
    assert_eq!(fallback["effective"]["source"], "talos-read");
    assert_eq!(fallback["effective"]["cwsr_enable"], "1");
    let notes = fallback["notes"].to_string();
    assert!(notes.contains("could not be read"), "{notes}");
}
