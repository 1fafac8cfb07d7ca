#!/usr/bin/env bash
# Agent memory under clients that ask for a 4 MiB pod log and never read the reply (150 by
# default), and after they leave. Release build; prints a Markdown table for BENCHMARKS.md.
# Usage: bench/pod-log-readers.sh [READERS]
# AGENT=path/to/nodectl-agent measures another build of the agent (an earlier commit's).
set -euo pipefail
cd "$(dirname "$0")/.."

readers=${1:-150}
profile=${PROFILE:-release}
dir=$([ "$profile" = dev ] && echo debug || echo "$profile")
cargo build --profile "$profile" --quiet -p nodectl-agent --bin nodectl-agent
cargo build --profile "$profile" --quiet -p nodectl-e2e --example pod_log_readers
agent=${AGENT:-target/$dir/nodectl-agent}

work=$(mktemp -d)
cleanup() {
  kill "${agent_pid:-}" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

logdir="$work/root/var/log/pods/llm_llama-0_0d3c5e1e-5d3f-4a8e-9c39-1c1b6b0a7e11/server"
mkdir -p "$work/root/proc" "$logdir"
python3 - "$logdir/0.log" <<'PY'
import sys
line = "2026-12-01T14:30:00.000000000Z stderr F srv  log_server_r: request: POST /completion 127.0.0.1 200\n"
with open(sys.argv[1], "w") as f:
    f.write(line * ((4 << 20) // len(line) + 1))
PY

"$agent" --host-root "$work/root" --listen 127.0.0.1:0 --log warn >"$work/agent.out" &
agent_pid=$!
for _ in $(seq 100); do grep -q '^ready$' "$work/agent.out" 2>/dev/null && break; sleep 0.1; done
grpc=$(sed -n 's/^listening grpc=\([0-9.:]*\)$/\1/p' "$work/agent.out" | head -1)

echo "machine: $(nproc) cores, $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)"
echo "agent: $agent ($profile)"
echo
target/$dir/examples/pod_log_readers --grpc "$grpc" --agent-pid "$agent_pid" --pod llm/llama-0 --readers "$readers"
