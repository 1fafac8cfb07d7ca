#!/usr/bin/env bash
# Idle footprint: the agent (release, TLS with a client CA on the gRPC and metrics ports, node
# conditions on against the fake API server, reading this machine) beside Debian's
# prometheus-node-exporter, both scraped every 15 s for DURATION seconds in the same run.
# RSS is sampled every 15 s from /proc/PID/status, CPU time is utime+stime from /proc/PID/stat.
# Needs prometheus-node-exporter (installed with apt-get when missing). Results go to
# BENCHMARKS.md by hand.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-600}
INTERVAL=15

command -v prometheus-node-exporter >/dev/null || apt-get install -y prometheus-node-exporter >/dev/null
. bench/idle-setup.sh

# The release link puts the functions agent/idle-code.order lists first (agent/build.rs); names
# the binary no longer holds (another toolchain, crate versions) are passed over.
listed=$(grep -vc '^#' agent/idle-code.order || true)
held=$(nm --defined-only "$bin/nodectl-agent" | awk '{print $3}' | sort -u \
  | comm -12 - <(grep -v '^#' agent/idle-code.order | sort -u) | wc -l)
echo "agent/idle-code.order: the binary holds $held of its $listed symbols"
echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(free -g | awk '/Mem:/ {print $2}') GiB, kernel $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)"

mkdir -p "$work/state"
"$bin/nodectl-agent" --host-root / --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 \
  --tls-cert "$work/server.crt" --tls-key "$work/server.key" --client-ca "$work/ca.crt" \
  --state-dir "$work/state" --kube-node-conditions --node-name bench-node \
  --kubeconfig "$work/kubeconfig" --log info,nodectl_agent::node_health=debug \
  > "$work/agent.out" 2> "$work/agent.err" &
agent=$!
pids+=($agent)
for _ in $(seq 1 300); do grep -q '^ready' "$work/agent.out" && break; sleep 0.1; done
metrics=$(sed -n 's/^listening metrics=//p' "$work/agent.out")

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
prometheus-node-exporter --web.listen-address="127.0.0.1:$port" > "$work/ne.out" 2>&1 &
exporter=$!
pids+=($exporter)
sleep 2

cpu_seconds() { awk -v tck="$(getconf CLK_TCK)" '{print ($14 + $15) / tck}' "/proc/$1/stat"; }
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

agent_cpu0=$(cpu_seconds "$agent"); exporter_cpu0=$(cpu_seconds "$exporter")
: > "$work/rss"
end=$((SECONDS + DURATION))
while [ "$SECONDS" -lt "$end" ]; do
  curl -sf --cacert "$work/ca.crt" --cert "$work/op.crt" --key "$work/op.key" \
    --resolve "nodectl-agent:${metrics##*:}:127.0.0.1" "https://nodectl-agent:${metrics##*:}/metrics" \
    > "$work/agent.metrics"
  curl -sf "http://127.0.0.1:$port/metrics" > "$work/exporter.metrics"
  echo "$(rss_kib "$agent") $(rss_kib "$exporter")" >> "$work/rss"
  sleep "$INTERVAL"
done
for who in agent exporter; do
  pid=${!who}
  echo "$who at the end: $(awk '/^(VmRSS|RssAnon|RssFile):/ {printf "%s %.1f MiB  ", $1, $2 / 1024}' "/proc/$pid/status")"
done
agent_cpu=$(echo "$(cpu_seconds "$agent") - $agent_cpu0" | bc -l)
exporter_cpu=$(echo "$(cpu_seconds "$exporter") - $exporter_cpu0" | bc -l)

echo "scrapes: $(wc -l < "$work/rss") each; last agent scrape $(grep -c '^nodectl_' "$work/agent.metrics") nodectl_ lines, node_exporter $(grep -c '^node_' "$work/exporter.metrics") node_ lines"
echo "node condition written $(grep -c 'node condition set' "$work/agent.err" || true) times, $(grep -c WARN "$work/agent.err" || true) warnings"
python3 - "$work/rss" "$agent_cpu" "$exporter_cpu" "$DURATION" <<'PY'
import statistics, sys
rows = [tuple(map(int, l.split())) for l in open(sys.argv[1]) if l.strip()]
agent = [r[0] for r in rows]; exporter = [r[1] for r in rows]
a_cpu, e_cpu, d = float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
print(f"agent RSS median {statistics.median(agent)/1024:.1f} MiB, max {max(agent)/1024:.1f} MiB; CPU {a_cpu:.2f} s = {100*a_cpu/d:.3f} %")
print(f"node_exporter RSS median {statistics.median(exporter)/1024:.1f} MiB, max {max(exporter)/1024:.1f} MiB; CPU {e_cpu:.2f} s = {100*e_cpu/d:.3f} %")
print(f"ratio agent / node_exporter RSS (medians): {statistics.median(agent)/statistics.median(exporter):.2f}")
PY
