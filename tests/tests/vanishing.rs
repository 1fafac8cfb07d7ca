//! A GPU that unbinds while the agent reads it (a reset takes the card's sysfs directory away and brings it back): every snapshot is answered, whole or partial with its problems listed, never a silent loss or a failed call.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use nodectl_e2e::harness::{Agent, node_fixture_copy};
use nodectl_proto::nodectl::v1 as pb;
use pb::node_diagnostics_client::NodeDiagnosticsClient;

/// The card's device directory in the fixture tree; `drm/card1` and the class link point into it.
const CARD_DEVICE: &str = "sys/devices/pci0000:00/0000:00:08.1/0000:c1:00.0";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_card_that_vanishes_mid_read_gives_partial_snapshots_with_problems() -> anyhow::Result<()>
{
    let dir = node_fixture_copy("strix-halo-healthy")?;
    let tree = dir.path().join("root");
    let agent = {
        let tree = tree.clone();
        tokio::task::spawn_blocking(move || Agent::start(&tree, &[])).await??
    };
    let mut client = NodeDiagnosticsClient::connect(agent.endpoint.clone()).await?;
    let whole = client
        .get_snapshot(pb::GetSnapshotRequest::default())
        .await?
        .into_inner();
    anyhow::ensure!(whole.cards.len() == 1, "the fixture has one card");
    let baseline_problems = whole.problems.len();

    // Unbind and rebind the card over and over, as fast as renames go, while snapshots are
    // taken: reads land before, during and after each change.
    let present = tree.join(CARD_DEVICE);
    let away = tree.join("sys/devices/unbound-card");
    let stop = Arc::new(AtomicBool::new(false));
    let toggles = Arc::new(AtomicU64::new(0));
    let toggler = {
        let stop = Arc::clone(&stop);
        let toggles = Arc::clone(&toggles);
        std::thread::spawn(move || -> std::io::Result<()> {
            while !stop.load(Ordering::Relaxed) {
                std::fs::rename(&present, &away)?;
                std::thread::sleep(Duration::from_micros(300));
                std::fs::rename(&away, &present)?;
                toggles.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_micros(300));
            }
            Ok(())
        })
    };

    let (mut complete, mut partial) = (0, 0);
    for round in 0..60 {
        let snapshot = client
            .get_snapshot(pb::GetSnapshotRequest::default())
            .await
            .map_err(|e| anyhow::anyhow!("snapshot {round} failed while the card vanished: {e}"))?
            .into_inner();
        let card_whole = snapshot.cards.len() == 1 && snapshot.cards[0] == whole.cards[0];
        if card_whole && snapshot.problems.len() == baseline_problems {
            complete += 1;
        } else {
            assert!(
                snapshot.problems.len() > baseline_problems,
                "snapshot {round}: the card was not read whole ({} cards) and no problem says so: {:?}\nwhole: {:?}\nnow: {:?}",
                snapshot.cards.len(),
                snapshot.problems,
                whole.cards,
                snapshot.cards
            );
            partial += 1;
        }
    }
    stop.store(true, Ordering::Relaxed);
    toggler
        .join()
        .map_err(|_| anyhow::anyhow!("the toggling thread panicked"))??;
    assert!(
        toggles.load(Ordering::Relaxed) > 10,
        "the card hardly moved"
    );
    eprintln!("{complete} whole snapshots, {partial} partial with problems listed");
    assert!(partial > 0, "no read ever met the unbound card");

    // Bound again, the next snapshot is whole: nothing stuck from the vanished reads.
    let after = client
        .get_snapshot(pb::GetSnapshotRequest::default())
        .await?
        .into_inner();
    assert_eq!(after.cards, whole.cards);
    assert_eq!(
        after.problems.len(),
        baseline_problems,
        "{:?}",
        after.problems
    );
    agent.terminate()?;
    Ok(())
}
