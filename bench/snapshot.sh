#!/usr/bin/env bash
# Snapshot latency over gRPC and agent RSS, side by side with prometheus-node-exporter's drm
# collector scraping the same tree, in one run. Needs the Debian package prometheus-node-exporter.
# Usage: bench/snapshot.sh [FIXTURE_ROOT] [ITERATIONS]
set -euo pipefail
cd "$(dirname "$0")/.."

fixture=${1:-tests/fixtures/nodes/strix-halo-healthy}
iterations=${2:-1000}
command -v prometheus-node-exporter >/dev/null || {
  echo "needs prometheus-node-exporter (apt-get install prometheus-node-exporter)" >&2
  exit 2
}

# PROFILE=dev checks the script quickly; recorded figures use the release build.
profile=${PROFILE:-release}
dir=$([ "$profile" = dev ] && echo debug || echo "$profile")
cargo build --profile "$profile" --quiet -p nodectl-agent --bin nodectl-agent
cargo build --profile "$profile" --quiet -p nodectl-e2e --example snapshot_latency

work=$(mktemp -d)
cleanup() {
  kill "${agent_pid:-}" "${exporter_pid:-}" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

target/$dir/nodectl-agent --host-root "$fixture" --listen 127.0.0.1:0 --log warn >"$work/agent.out" &
agent_pid=$!
for _ in $(seq 100); do grep -q '^ready$' "$work/agent.out" 2>/dev/null && break; sleep 0.1; done
grpc=$(sed -n 's/^listening grpc=\([0-9.:]*\)$/\1/p' "$work/agent.out" | head -1)

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
prometheus-node-exporter --collector.disable-defaults --collector.drm \
  --path.sysfs="$fixture/sys" --path.procfs="$fixture/proc" \
  --web.listen-address="127.0.0.1:$port" >"$work/exporter.log" 2>&1 &
exporter_pid=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/metrics" >/dev/null 2>&1 && break; sleep 0.1; done

echo "fixture: $fixture"
echo "machine: $(nproc) cores, $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)"
echo "profile: $profile"
echo "exporter: $(prometheus-node-exporter --version 2>&1 | head -1)"
echo
target/$dir/examples/snapshot_latency --grpc "http://$grpc" --http "http://127.0.0.1:$port/metrics" \
  --agent-pid "$agent_pid" --exporter-pid "$exporter_pid" --iterations "$iterations"
