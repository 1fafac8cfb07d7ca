//! The command line as users see it: every `--help` (tests/cli/*.md) and the README's offline examples (fixture-tree runs), checked with trycmd.
//!
//! `TRYCMD=overwrite cargo test -p nodectl-e2e --test cli_ui` rewrites the expected output;
//! review the diff.

use nodectl_e2e::harness::{binary, workspace_root};

#[test]
fn help_texts_and_readme_examples() -> anyhow::Result<()> {
    let nodectl = binary("nodectl")?;
    let agent = binary("nodectl-agent")?;
    // The README's examples name fixture trees relative to the workspace root.
    std::env::set_current_dir(workspace_root())?;
    trycmd::TestCases::new()
        .register_bin("nodectl", nodectl)
        .register_bin("nodectl-agent", agent)
        .env("NO_COLOR", "1")
        .case("tests/cli/*.md")
        .case("README.md");
    Ok(())
}
