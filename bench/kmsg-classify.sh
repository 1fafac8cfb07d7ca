#!/usr/bin/env bash
# Kernel log classification of a saved log (`nodectl events --file LOG --summary`) side by side
# with `grep -E -c -f PATTERNS` over the same file in the same run, PATTERNS being (1) the
# classifier's rules as EREs and (2) 24 plain message patterns an operator would grep for
# (bench/kmsg-short-patterns.txt). Best of $RUNS wall times each; max RSS of nodectl.
# Results go to BENCHMARKS.md by hand. Needs no root (bench/kmsg.sh runs this and more).
set -euo pipefail
cd "$(dirname "$0")/.."

LINES=${LINES:-1000000}
RUNS=${RUNS:-3}

cargo build --release --quiet -p nodectl --bin nodectl
bin=target/release/nodectl
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), kernel $(uname -r)"
. bench/timing.sh

python3 bench/gen-kmsg-log.py "$LINES" "$work/mixed.log"
bash bench/rules-to-ere.sh > "$work/rules.ere"
lines=$(wc -l < "$work/mixed.log")
bytes=$(stat -c %s "$work/mixed.log")
echo "log: $lines lines, $bytes bytes"

t_rules=$(best_of grep -E -c -f "$work/rules.ere" "$work/mixed.log")
rules_count=$(cat "$work/out")
t_short=$(best_of grep -E -c -f bench/kmsg-short-patterns.txt "$work/mixed.log")
short_count=$(cat "$work/out")
t_ours=$(best_of "$bin" events --file "$work/mixed.log" --summary -o json)
read -r ours_count incidents < <(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(sum(d["counts"].values()), len(d["incidents"]))' "$work/out")
rss=$( { /usr/bin/time -f '%M' "$bin" events --file "$work/mixed.log" --summary -o json > /dev/null; } 2>&1 | tail -1)

echo "grep -E -c -f rules ($(wc -l < "$work/rules.ere") EREs): $rules_count lines in ${t_rules}s"
echo "grep -E -c -f short list (24 patterns): $short_count lines in ${t_short}s"
echo "nodectl events --file --summary: $ours_count events, $incidents incidents in ${t_ours}s, max RSS ${rss} KiB"
echo "time ratio nodectl / grep (rules): $(echo "scale=2; $t_ours / $t_rules" | bc -l)"
echo "time ratio nodectl / grep (short list): $(echo "scale=2; $t_ours / $t_short" | bc -l)  (target <= 0.5)"
