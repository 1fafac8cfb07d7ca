//! Links the agent's idle code together in release builds, in the order of `idle-code.order`.
//!
//! What a running agent keeps resident of its binary is every 64 KiB block it has run code in
//! (the kernel maps pages around each fault). Scattered over the binary, the ~1 MB that idle
//! serving runs (a TLS scrape, a health check, a node-condition heartbeat) touched nearly every
//! block of 7 MB; listed first, it fills a few. `bench/idle-code-order.sh` writes the list from
//! a profile of an idle agent (BENCHMARKS.md, idle footprint). Symbols the build does not hold
//! (another toolchain or crate version names them differently) are passed over, so a stale list
//! costs resident memory, never a build.

fn main() {
    println!("cargo::rerun-if-changed=idle-code.order");
    println!("cargo::rerun-if-env-changed=CARGO_ENCODED_RUSTFLAGS");
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    // LLD is the default linker of this target since Rust 1.90; GNU ld knows neither flag, so a
    // build that picks its own linker is left as it is.
    let lld_by_default = var("TARGET") == "x86_64-unknown-linux-gnu"
        && !var("CARGO_ENCODED_RUSTFLAGS").contains("link");
    if var("PROFILE") != "release" || !lld_by_default {
        return;
    }
    let order = std::path::Path::new(&var("CARGO_MANIFEST_DIR")).join("idle-code.order");
    if !order.is_file() {
        return;
    }
    println!(
        "cargo::rustc-link-arg-bin=nodectl-agent=-Wl,--symbol-ordering-file={}",
        order.display()
    );
    println!("cargo::rustc-link-arg-bin=nodectl-agent=-Wl,--no-warn-symbol-ordering");
}
