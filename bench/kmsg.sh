#!/usr/bin/env bash
# Kernel log benchmarks, each side by side in one run (results go to BENCHMARKS.md by hand):
#  (a) classification of a mixed kernel log (>= 1 M lines) vs `grep -E -c` (bench/kmsg-classify.sh);
#  (b) latency from a write to /dev/kmsg to receipt by a gRPC follow client, p50/p99;
#  (c) agent RSS during and after a 1 M-record /dev/kmsg storm with one stalled subscriber.
# Needs root (writes /dev/kmsg; lifts the user-write rate limit for the run and restores it).
set -euo pipefail
cd "$(dirname "$0")/.."

LINES=${LINES:-1000000}
STORM=${STORM:-1000000}
LATENCY_RECORDS=${LATENCY_RECORDS:-500}
RUNS=${RUNS:-3}

cargo build --release --quiet -p nodectl -p nodectl-agent --bins
cargo build --release --quiet -p nodectl-e2e --example kmsg_bench
bin=target/release
work=$(mktemp -d)
agent_pid=""
stall_pid=""
ratelimit=$(cat /proc/sys/kernel/printk_devkmsg)
cleanup() {
  [ -n "$stall_pid" ] && kill "$stall_pid" 2>/dev/null || true
  [ -n "$agent_pid" ] && kill "$agent_pid" 2>/dev/null || true
  echo "$ratelimit" > /proc/sys/kernel/printk_devkmsg
  rm -rf "$work"
}
trap cleanup EXIT

echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), kernel $(uname -r)"

. bench/timing.sh

# ---- (a) classification vs grep ----
LINES=$LINES RUNS=$RUNS bash bench/kmsg-classify.sh | sed 's/^/(a) /'

# ---- agent for (b) and (c) ----
echo on > /proc/sys/kernel/printk_devkmsg
start_agent() {
  "$bin/nodectl-agent" --host-root / --full-kernel-log --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 --log warn > "$work/agent.out" &
  agent_pid=$!
  for _ in $(seq 100); do grep -q '^ready' "$work/agent.out" 2>/dev/null && break; sleep 0.1; done
  endpoint="http://$(sed -n 's/^listening grpc=//p' "$work/agent.out" | head -1)"
  metrics="http://$(sed -n 's/^listening metrics=//p' "$work/agent.out" | head -1)/metrics"
}
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$agent_pid/status"; }

# ---- (b) latency ----
start_agent
"$bin/examples/kmsg_bench" latency "$endpoint" "$LATENCY_RECORDS" | sed 's/^/(b) /'
kill "$agent_pid"; wait "$agent_pid" 2>/dev/null || true; agent_pid=""

# ---- (c) RSS under a storm with a stalled subscriber ----
start_agent
sleep 1
rss_start=$(rss_kib)
"$bin/examples/kmsg_bench" stall "$endpoint" > "$work/stall.out" &
stall_pid=$!
for _ in $(seq 50); do grep -q stalled "$work/stall.out" 2>/dev/null && break; sleep 0.1; done
"$bin/examples/kmsg_bench" storm "$STORM" > "$work/storm.out" &
storm_pid=$!
peak=0; samples=""
while kill -0 "$storm_pid" 2>/dev/null; do
  r=$(rss_kib); samples="$samples $r"; [ "$r" -gt "$peak" ] && peak=$r; sleep 0.5
done
wait "$storm_pid"
sleep 2
rss_after=$(rss_kib)
sleep 5
rss_later=$(rss_kib)
lost=$(python3 -c 'import sys,urllib.request; print([l.split()[1] for l in urllib.request.urlopen(sys.argv[1]).read().decode().splitlines() if l.startswith("nodectl_kmsg_records_lost_total")][0])' "$metrics" || echo "?")
echo "(c) $(cat "$work/storm.out"); agent RSS KiB: start $rss_start, peak during storm $peak, 2 s after $rss_after, 7 s after $rss_later"
echo "    RSS samples during the storm (KiB, every 0.5 s):$samples"
echo "    records_lost reported by the agent (ring overruns while it read): $lost"
