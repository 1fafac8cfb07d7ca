#!/usr/bin/env bash
# Writes agent/idle-code.order: the functions of nodectl-agent that run while it serves idle, so
# that the release link puts them together (agent/build.rs). Runs the release agent under
# valgrind's callgrind twice at once, as bench/idle.sh runs it (TLS with a client CA on both
# ports, node conditions on against the fake API server): once reading this machine, once the
# strix-halo-healthy fixture tree (a node with a gfx1151 card, for the GPU collectors). Each is
# profiled from the end of its start-up (when it gives back the pages start-up used) for DURATION
# seconds (default 320: one node-condition heartbeat falls inside), scraped every 15 s. Needs
# valgrind (apt-get install valgrind). Names are the
# binary's mangled symbols, which change with the toolchain and crate versions: re-run after
# upgrading either (bench/idle.sh reports how many of the listed names the binary still holds).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-320}
INTERVAL=15

command -v valgrind >/dev/null || apt-get install -y valgrind >/dev/null
. bench/idle-setup.sh

# profile NAME ROOT: one agent under callgrind, its idle part dumped to $work/NAME.idle.
profile() {
  local name=$1 root=$2 dir=$work/$1
  mkdir -p "$dir/state"
  valgrind --tool=callgrind --demangle=no --callgrind-out-file="$dir/cg" \
    "$bin/nodectl-agent" --host-root "$root" --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 \
    --tls-cert "$work/server.crt" --tls-key "$work/server.key" --client-ca "$work/ca.crt" \
    --state-dir "$dir/state" --kube-node-conditions --node-name "$name" \
    --kubeconfig "$work/kubeconfig" --log info,nodectl_agent::resident=debug \
    > "$dir/out" 2> "$dir/err" &
  local agent=$! released='unmapped the pages of read-only file mappings'
  # From the moment start-up ends: the agent gives back what it used then (agent/src/resident.rs).
  for _ in $(seq 1 1200); do grep -q "$released" "$dir/err" && break; sleep 0.1; done
  grep -q "$released" "$dir/err" || { echo "$name: the agent did not start" >&2; cat "$dir/err" >&2; return 1; }
  callgrind_control --zero "$agent" > /dev/null
  local metrics end
  metrics=$(sed -n 's/^listening metrics=//p' "$dir/out")
  end=$((SECONDS + DURATION))
  while [ "$SECONDS" -lt "$end" ]; do
    curl -sf --cacert "$work/ca.crt" --cert "$work/op.crt" --key "$work/op.key" \
      --resolve "nodectl-agent:${metrics##*:}:127.0.0.1" "https://nodectl-agent:${metrics##*:}/metrics" \
      > /dev/null
    sleep "$INTERVAL"
  done
  callgrind_control --dump=idle "$agent" > /dev/null
  kill "$agent"
  wait "$agent" || true
  cat "$dir"/cg.* > "$work/$name.idle"
}

profile host / &
host=$!
profile fixture "$PWD/tests/fixtures/nodes/strix-halo-healthy" &
fixture=$!
wait "$host"
wait "$fixture"

nm --defined-only "$bin/nodectl-agent" > "$work/nm"
python3 - "$work/nm" "$work/host.idle" "$work/fixture.idle" > agent/idle-code.order <<'PY'
import re, sys
# Function symbols of the binary's code.
code = {parts[2] for parts in (l.split() for l in open(sys.argv[1])) if len(parts) == 3 and parts[1] in "tTwW"}
ran = set()
for path in sys.argv[2:]:
    # Keep only the idle dump: the profile's start-up part comes first in the file.
    text = open(path, errors="replace").read()
    parts = re.split(r"^# callgrind format$", text, flags=re.M)
    idle = [p for p in parts if re.search(r"^desc: Trigger: dump idle", p, flags=re.M)]
    names = {}
    current = None
    for line in "".join(idle).splitlines():
        m = re.match(r"^(c?fn)=\((\d+)\)(?: (.*))?$", line)
        if m:
            kind, ident, name = m.groups()
            if name:
                # callgrind marks a recursion depth with 'N; the symbol is the part before.
                names[ident] = name.split("'")[0]
            if kind == "fn":
                current = names.get(ident)
            continue
        if current and re.match(r"^[+-]?\d", line):
            ran.add(current)
hot = sorted(ran & code)
print("# nodectl-agent's functions that ran while it served idle, linked first in release builds")
print("# (agent/build.rs). Written by bench/idle-code-order.sh; do not edit by hand.")
print(f"# {len(hot)} symbols.")
print("\n".join(hot))
PY
echo "agent/idle-code.order: $(grep -vc '^#' agent/idle-code.order) symbols"
