//! Benchmark helper for `bench/llama-log.sh`: parses one llama.cpp log as `nodectl diagnose --log` does and prints what it found.

fn main() -> anyhow::Result<()> {
    let path = std::env::args()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("usage: llama_log_bench LOG"))?;
    let file = std::fs::File::open(&path)?;
    let log =
        // Read as `nodectl diagnose --log` reads.
        nodectl::cmd::diagnose::parse_reader(std::io::BufReader::with_capacity(
            nodectl_model::line_reader::READ_BUFFER_BYTES,
            file,
        ))?;
    println!(
        "{} lines, {} recognised, {} phase marks, last phase {}",
        log.lines_read,
        log.lines_recognised,
        log.timeline.len(),
        log.last_phase()
            .map_or("none", nodectl_diagnosis::llama_log::Phase::as_str)
    );
    Ok(())
}
