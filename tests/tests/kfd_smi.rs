//! KFD SMI event records: every form of the reference parsed to its golden, read whole or in pieces of any size, and nothing panics on any bytes.

use nodectl_e2e::harness::{assert_golden, fixture};
use nodectl_model::kfd_smi::{RecordSplitter, SmiEventKind, SmiRecord, parse_record};
use proptest::prelude::*;

fn every_form() -> anyhow::Result<Vec<u8>> {
    Ok(std::fs::read(fixture("kfd-smi/every-form.records"))?)
}

fn split_in(bytes: &[u8], cuts: &[usize]) -> Vec<SmiRecord> {
    let mut splitter = RecordSplitter::default();
    let mut records = Vec::new();
    let mut at = 0;
    for &cut in cuts {
        let end = (at + cut).min(bytes.len());
        records.extend(splitter.push(&bytes[at..end]));
        at = end;
    }
    records.extend(splitter.push(&bytes[at..]));
    records.extend(splitter.finish());
    records
}

#[test]
fn every_form_of_the_reference_parses_to_its_golden() -> anyhow::Result<()> {
    let bytes = every_form()?;
    let records = split_in(&bytes, &[]);
    assert_eq!(records.len(), bytes.iter().filter(|b| **b == b'\n').count());
    let kinds: Vec<&str> = records.iter().map(|r| r.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "vm_fault",
            "vm_fault",
            "vm_fault",
            "thermal_throttle",
            "gpu_pre_reset",
            "gpu_pre_reset",
            "gpu_post_reset",
            "gpu_pre_reset",
            "gpu_post_reset",
            "migrate_start",
            "migrate_end",
            "migrate_end",
            "page_fault_start",
            "page_fault_end",
            "queue_eviction",
            "queue_restore",
            "queue_restore",
            "queue_restore",
            "queue_restore",
            "unmap_from_gpu",
            "process_start",
            "process_end",
            "dropped_events",
            "unknown",
            "unknown",
            "unknown",
        ]
    );
    assert_golden(
        &fixture("kfd-smi/every-form.golden.json"),
        &serde_json::to_value(&records)?,
    )?;
    Ok(())
}

#[test]
fn the_details_that_correlation_uses() {
    let reset = parse_record(b"3 2 job hang on ring:gfx_0.0.0");
    assert_eq!(reset.kind, SmiEventKind::GpuPreReset);
    assert_eq!(reset.reset_seq, Some(2));
    assert_eq!(
        reset.reset_cause.as_deref(),
        Some("job hang on ring:gfx_0.0.0")
    );
    let post = parse_record(b"4 1 ");
    assert_eq!(post.reset_cause.as_deref(), Some(""));
    assert_eq!(parse_record(b"4 1").reset_cause, None);
    // VMFAULT and PROCESS_* print the pid in hex; 5–b in decimal.
    let fault = parse_record(b"1 3039:python3");
    assert_eq!(
        (fault.pid, fault.comm.as_deref()),
        (Some(12345), Some("python3"))
    );
    let start = parse_record(b"c 10e1 llama-server");
    assert_eq!(start.pid, Some(0x10e1));
    let evicted = parse_record(b"9 90000000000 -4321 d2bb 1");
    assert_eq!(
        (
            evicted.boottime_ns,
            evicted.pid,
            evicted.gpu_id,
            evicted.trigger.as_deref()
        ),
        (
            Some(90_000_000_000),
            Some(4321),
            Some(53947),
            Some("userptr")
        )
    );
    // PAGE_FAULT's parenthesised value is the gpu_id, not a size.
    let fault = parse_record(b"7 81234000000 -4321 @7f0000123(d2bb) W");
    assert_eq!(
        (fault.gpu_id, fault.size_pages, fault.flag),
        (Some(53947), None, Some('W'))
    );
    // The 6.12 NUL before the newline, stripped; the restore was not rescheduled.
    let restore = parse_record(b"a 90000500000 -4321 d2bb \0");
    assert_eq!(
        (restore.kind, restore.flag),
        (SmiEventKind::QueueRestore, None)
    );
    assert_eq!(restore.raw, "a 90000500000 -4321 d2bb ");
    // Unknown: only the id, the raw text and why.
    let unknown = parse_record(b"9 garbage");
    assert_eq!(unknown.kind, SmiEventKind::Unknown);
    assert_eq!((unknown.event_id, unknown.pid), (Some(9), None));
    assert!(unknown.unparsed.is_some());
}

#[test]
fn a_line_longer_than_any_record_is_kept_raw_and_cut() {
    let long = vec![b'1'; 1000];
    let record = parse_record(&long);
    assert_eq!(record.kind, SmiEventKind::Unknown);
    assert!(record.raw.len() <= 4 * nodectl_model::kfd_smi::MAX_RECORD_BYTES);
    let mut splitter = RecordSplitter::default();
    let out = splitter.push(&long);
    assert_eq!(out.len(), 1);
    assert_eq!(splitter.overlong_bytes, 1000);
    assert!(splitter.finish().is_none());
}

proptest! {
    #[test]
    fn reads_of_any_size_give_the_same_records(cuts in proptest::collection::vec(0usize..40, 0..60)) {
        let bytes = every_form().unwrap_or_default();
        let whole = split_in(&bytes, &[]);
        prop_assert_eq!(split_in(&bytes, &cuts), whole);
    }

    #[test]
    fn no_bytes_make_the_parser_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = parse_record(&bytes);
        let _ = split_in(&bytes, &[7, 13]);
    }

    #[test]
    fn mutated_records_never_panic(pick in 0usize..26, at in 0usize..60, insert in "\\PC{0,6}") {
        let bytes = every_form().unwrap_or_default();
        let lines: Vec<&[u8]> = bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()).collect();
        let line = lines[pick % lines.len()];
        let at = at.min(line.len());
        let mut mutated = line[..at].to_vec();
        mutated.extend_from_slice(insert.as_bytes());
        mutated.extend_from_slice(&line[at..]);
        let _ = parse_record(&mutated);
    }
}

#[test]
fn saved_records_beside_the_kernel_log_make_one_incident_and_show_what_was_dropped()
-> anyhow::Result<()> {
    let path = fixture("kfd-smi/reset-beside-the-kernel-log.log");
    let run = nodectl_e2e::harness::nodectl(&[
        "events",
        "--file",
        path.to_str().unwrap_or_default(),
        "-o",
        "json",
    ])?;
    anyhow::ensure!(run.code == 0, "exit {}: {}", run.code, run.stderr);
    let json: serde_json::Value = serde_json::from_str(&run.stdout)?;
    assert_golden(&path.with_extension("golden.json"), &json)?;
    let incidents = json["incidents"].as_array().cloned().unwrap_or_default();
    assert_eq!(incidents.len(), 1, "{incidents:?}");
    assert_eq!(incidents[0]["kind"], "mes_hang_reset");
    assert_eq!(
        incidents[0]["sources"],
        serde_json::json!(["kmsg", "kfd_smi"])
    );
    let events = json["events"].as_array().cloned().unwrap_or_default();
    let smi: Vec<&serde_json::Value> = events.iter().filter(|e| e["source"] == "kfd_smi").collect();
    let ids: Vec<&str> = smi.iter().filter_map(|e| e["id"].as_str()).collect();
    assert_eq!(
        ids,
        [
            "kfd_smi_mes_hang_reset",
            "kfd_smi_gpu_post_reset",
            "kfd_smi_mes_hang_reset"
        ]
    );
    // Reset 2 never showed: the channel dropped it, and the record after the gap says so.
    assert!(
        smi[..2]
            .iter()
            .all(|e| e["fields"]["sequence_gap"].is_null())
    );
    assert!(
        smi[2]["fields"]["sequence_gap"]
            .as_str()
            .is_some_and(|g| g.contains("reset 2 was not seen")),
        "{}",
        smi[2]
    );
    assert_eq!(json["input"]["lines_by_format"]["kfd_smi"], 3);
    Ok(())
}
