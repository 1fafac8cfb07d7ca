//! The agent's Prometheus text on a fixture tree: a golden scrape that `promtool check metrics` accepts, as node_exporter's end-to-end test does.

use nodectl_e2e::harness::{self, Agent, node_fixture};

#[test]
fn the_scrape_of_each_fixture_matches_its_golden_file_and_passes_promtool() -> anyhow::Result<()> {
    for name in ["strix-halo-healthy", "strix-halo-risky", "no-gpu"] {
        let agent = Agent::start(&node_fixture(name), &["--metrics-listen", "127.0.0.1:0"])?;
        let addr = agent
            .listener("metrics")
            .ok_or_else(|| anyhow::anyhow!("{name}: no metrics listener printed"))?;
        let body = harness::http_get(addr, "/metrics")?;
        harness::assert_golden_text(&node_fixture(&format!("{name}.metrics.txt")), &body)?;
        harness::promtool_check(&body)?;
        assert!(agent.terminate()?, "{name}: agent exits 0 on SIGTERM");
    }
    Ok(())
}
