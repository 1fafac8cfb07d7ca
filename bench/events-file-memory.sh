#!/usr/bin/env bash
# `nodectl events --file` against the size of the log: max RSS (/usr/bin/time) and wall time,
# as JSON and as a table, with the default filter (classified events) and with
# --include-unclassified (every line an event: the most output). The logs are
# bench/gen-kmsg-log.py's mixed dmesg log of $SIZES_MB megabytes (~75 bytes a line), the clock
# jumping 30 s every 1000 lines so that the log holds one incident per thousand lines. Output
# goes to /dev/null: what is measured is reading, classifying and printing. One run each.
# Results go to BENCHMARKS.md by hand. Needs no root.
set -euo pipefail
cd "$(dirname "$0")/.."

SIZES_MB=${SIZES_MB:-"100 1000"}

cargo build --release --quiet -p nodectl --bin nodectl
bin=${CARGO_TARGET_DIR:-target}/release/nodectl
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), kernel $(uname -r)"
echo
echo "| log | events, incidents | output | flags | max RSS | time |"
echo "|---|---|---|---|---|---|"
for mb in $SIZES_MB; do
  python3 bench/gen-kmsg-log.py $((mb * 1000000 / 75)) "$work/log" 1000
  bytes=$(stat -c %s "$work/log")
  lines=$(wc -l < "$work/log")
  read -r events incidents < <("$bin" events --file "$work/log" --summary -o json |
    python3 -c 'import json,sys; d=json.load(sys.stdin); print(sum(d["counts"].values()), len(d["incidents"]))')
  for flags in "" "--include-unclassified"; do
    for output in json table; do
      # shellcheck disable=SC2086 # $flags is one flag or none
      /usr/bin/time -f '%e %M' -o "$work/time" "$bin" events --file "$work/log" -o "$output" $flags > /dev/null
      read -r seconds kib < "$work/time"
      shown=$events
      [ -n "$flags" ] && shown="all $lines lines"
      echo "| $bytes bytes, $lines lines | $shown, $incidents | $output | ${flags:-(none)} | $(echo "scale=1; $kib / 1024" | bc -l) MiB | ${seconds} s |"
    done
  done
done
