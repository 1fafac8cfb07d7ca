//! Generates a client of the previous nodectl.v1 kernel event wire (`proto-previous/`), with
//! protox (no protoc): the tests check that such a client still streams from the current agent.

use std::path::{Path, PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = Path::new("proto-previous");
    let file = PathBuf::from("nodectl/v1/kernel.proto");
    println!("cargo:rerun-if-changed={}", root.join(&file).display());
    let fds = protox::compile([&file], [root])?;
    tonic_prost_build::configure()
        .btree_map(".")
        .build_client(true)
        .build_server(false)
        .compile_fds(fds)?;
    Ok(())
}
