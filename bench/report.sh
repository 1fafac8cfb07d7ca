#!/usr/bin/env bash
# Time and peak memory of `nodectl report` on the largest tree (the strix-halo-risky fixture with
# a full 4 MiB kernel ring, an inference process and a 4 MiB pod log), in-process and through an
# agent, beside collecting the same files by hand as `talosctl support`-like tools do (`tar -czf`
# of the tree) in the same run. Release build; prints a Markdown table for BENCHMARKS.md.
# Usage: bench/report.sh [RUNS]
set -uo pipefail
cd "$(dirname "$0")/.."

runs=${1:-3}
cargo build --release --quiet -p nodectl --bin nodectl -p nodectl-agent --bin nodectl-agent
nodectl=target/release/nodectl
agent=target/release/nodectl-agent

work=$(mktemp -d)
cleanup() {
  kill "${agent_pid:-}" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

tree="$work/root"
cp -a tests/fixtures/nodes/strix-halo-risky "$tree"
uid=0d3c5e1e-5d3f-4a8e-9c39-1c1b6b0a7e11
mkdir -p "$tree/dev" "$tree/proc/4242" "$tree/var/log/pods/llm_llama-0_$uid/server"
python3 - "$tree" "$uid" <<'PY'
import sys, time
root, uid = sys.argv[1], sys.argv[2]
now = int(time.time())
boot = now - 86400
with open(f"{root}/proc/stat", "w") as f:
    f.write(f"cpu  1 0 1 100 0 0 0 0 0 0\nbtime {boot}\nprocesses 4300\n")
with open(f"{root}/proc/uptime", "w") as f:
    f.write("86400.00 300000.00\n")
# A full 4 MiB ring: ordinary records with amdgpu events among them.
lines, size, seq = [], 0, 1
while size < 4 << 20:
    usec = seq * 1000
    if seq % 500 == 0:
        text = "amdgpu 0000:c1:00.0: amdgpu: MES failed to respond to msg=REMOVE_QUEUE"
    elif seq % 50 == 0:
        text = "[drm] PCIE GART of 512M enabled (table at 0x000000F41FB00000)."
    else:
        text = f"systemd[1]: Started session-{seq}.scope - Session {seq} of user core."
    line = f"6,{seq},{usec},-;{text}\n"
    lines.append(line); size += len(line); seq += 1
open(f"{root}/dev/kmsg", "w").write("".join(lines))
pid = f"{root}/proc/4242"
open(f"{pid}/comm", "w").write("llama-server\n")
open(f"{pid}/cmdline", "w").write("\0".join(["/app/llama-server", "-m", "/models/q.gguf", "-ngl", "999", "--api-key", "sk-benchkey0123456789abcdefghijklmnopqrst"]) + "\0")
open(f"{pid}/environ", "w").write("HSA_ENABLE_SDMA=0\0PATH=/usr/bin\0")
open(f"{pid}/stat", "w").write("4242 (llama-server) S 1 4242 4242 0 -1 4194560 100 0 0 0 500 20 0 0 20 0 40 0 8000000 1000000 1000 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 3 0 0 0 0 0 0 0 0 0 0 0 0 0\n")
open(f"{pid}/status", "w").write("Name:\tllama-server\nState:\tS (sleeping)\nThreads:\t40\n")
open(f"{pid}/cgroup", "w").write(f"0::/kubepods.slice/kubepods-pod{uid.replace('-', '_')}.slice/cri-containerd-5f4dcc3b5aa765d61d8327deb882cf995f4dcc3b5aa765d61d8327deb882cf99.scope\n")
line = "2026-12-01T14:30:00.000000000Z stderr F srv  log_server_r: request: POST /completion 127.0.0.1 200\n"
with open(f"{root}/var/log/pods/llm_llama-0_{uid}/server/0.log", "w") as f:
    f.write(line * ((4 << 20) // len(line) + 1))
PY

# Elapsed seconds and peak RSS (MiB) of a command, from GNU time.
measure() {
  /usr/bin/time -f '%e %M' -o "$work/time" "$@" >/dev/null 2>&1
  awk '{printf "%s %.1f", $1, $2/1024}' "$work/time"
}

"$agent" --host-root "$tree" --listen 127.0.0.1:0 --log warn >"$work/agent.out" &
agent_pid=$!
for _ in $(seq 100); do grep -q '^ready$' "$work/agent.out" 2>/dev/null && break; sleep 0.1; done
grpc=$(sed -n 's/^listening grpc=\([0-9.:]*\)$/\1/p' "$work/agent.out" | head -1)
sleep 3
agent_idle=$(awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$agent_pid/status")

echo "machine: $(nproc) cores, $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)"
echo "tree: $(du -sh --apparent-size "$tree" | cut -f1) in $(find "$tree" -type f | wc -l) files"
echo
echo "| run | what | seconds | peak RSS MiB | output KiB |"
echo "|---|---|---|---|---|"
for run in $(seq "$runs"); do
  rm -f "$work"/b*.tar.gz
  read -r s m < <(measure "$nodectl" --host-root "$tree" report --out "$work/b1.tar.gz")
  echo "| $run | nodectl report --host-root (in-process) | $s | $m | $(( $(stat -c %s "$work/b1.tar.gz") / 1024 )) |"
  read -r s m < <(measure "$nodectl" report --endpoint "http://$grpc" --out "$work/b2.tar.gz")
  echo "| $run | nodectl report --endpoint (client) | $s | $m | $(( $(stat -c %s "$work/b2.tar.gz") / 1024 )) |"
  read -r s m < <(measure tar -czf "$work/b3.tar.gz" -C "$tree" .)
  echo "| $run | tar -czf of the same tree (by hand) | $s | $m | $(( $(stat -c %s "$work/b3.tar.gz") / 1024 )) |"
done
echo
echo "agent: RSS idle $agent_idle MiB, peak (VmHWM) after $runs reports $(awk '/VmHWM/ {printf "%.1f", $2/1024}' "/proc/$agent_pid/status") MiB, RSS now $(awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$agent_pid/status") MiB"
