#!/usr/bin/env bash
# llama.cpp log parsing throughput (`nodectl diagnose`'s parser) side by side with `grep -c`
# over the same verbose log in the same run (results go to BENCHMARKS.md by hand).
set -euo pipefail
cd "$(dirname "$0")/.."

SIZE_MB=${SIZE_MB:-220}
RUNS=${RUNS:-3}

cargo build --release --quiet -p nodectl-e2e --example llama_log_bench
bin=target/release/examples/llama_log_bench
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), kernel $(uname -r)"
python3 bench/gen-llama-log.py "$SIZE_MB" "$work/llama.log"
bytes=$(stat -c %s "$work/llama.log")
lines=$(wc -l < "$work/llama.log")
# The phase markers the parser places a line by, as one ERE.
pattern='load_tensors:|sched_reserve:|graph_reserve:|warming up the model|model loaded|processing task|prompt processing|prompt done|n_decoded =|all slots are idle|stop processing'

. bench/timing.sh

# The three commands take turns, $RUNS rounds: best of each, the median beside it.
: > "$work/t_grep"; : > "$work/t_literal"; : > "$work/t_ours"
for _ in $(seq "$RUNS"); do
  time_once grep -E -c "$pattern" "$work/llama.log" >> "$work/t_grep"
  grep_count=$(cat "$work/out")
  time_once grep -c 'slot' "$work/llama.log" >> "$work/t_literal"
  literal_count=$(cat "$work/out")
  time_once "$bin" "$work/llama.log" >> "$work/t_ours"
  ours=$(cat "$work/out")
done
read -r t_grep m_grep < <(min_median < "$work/t_grep")
read -r t_literal m_literal < <(min_median < "$work/t_literal")
read -r t_ours m_ours < <(min_median < "$work/t_ours")
rss=$( { /usr/bin/time -f '%M' "$bin" "$work/llama.log" > /dev/null; } 2>&1 | tail -1)
mb() { echo "scale=1; $bytes / $1 / 1000000" | bc -l; }
echo "log: $lines lines, $bytes bytes"
echo "grep -E -c (11 phase markers): $grep_count lines in ${t_grep}s ($(mb "$t_grep") MB/s)"
echo "grep -c slot: $literal_count lines in ${t_literal}s ($(mb "$t_literal") MB/s)"
echo "parser: $ours in ${t_ours}s ($(mb "$t_ours") MB/s), max RSS ${rss} KiB"
echo "ratio parser/grep -E (bytes per second): $(echo "scale=2; $t_grep / $t_ours" | bc -l) best, $(echo "scale=2; $m_grep / $m_ours" | bc -l) median"
echo "ratio parser/grep -c literal (bytes per second): $(echo "scale=2; $t_literal / $t_ours" | bc -l) best, $(echo "scale=2; $m_literal / $m_ours" | bc -l) median"
