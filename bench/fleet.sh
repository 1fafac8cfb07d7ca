#!/usr/bin/env bash
# Fleet benchmark: wall time for `nodectl --endpoints-file F node check` over 50 agents on
# loopback, each with TLS and a client CA (45 over the healthy fixture, 5 over strix-halo-mes83,
# which holds a critical finding); then with 5 agents killed and 1 stopped (SIGSTOP) and
# --node-timeout 3s. Results go to BENCHMARKS.md by hand.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/tls-certs.sh

AGENTS=${AGENTS:-50}
RUNS=${RUNS:-5}

cargo build --release --quiet -p nodectl -p nodectl-agent --bins
bin=$PWD/target/release
work=$(mktemp -d)
pids=()
stopped=""
cleanup() {
  [ -n "$stopped" ] && kill -CONT "$stopped" 2>/dev/null || true
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), kernel $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)"

# A CA, a serving certificate for 127.0.0.1 / nodectl-agent, an operator's client certificate.
make_certs "$work"

: > "$work/endpoints"
for i in $(seq 1 "$AGENTS"); do
  tree=tests/fixtures/nodes/strix-halo-healthy
  [ "$i" -le 5 ] && tree=tests/fixtures/nodes/strix-halo-mes83
  "$bin/nodectl-agent" --host-root "$tree" --listen 127.0.0.1:0 \
    --tls-cert "$work/server.crt" --tls-key "$work/server.key" --client-ca "$work/ca.crt" \
    > "$work/agent$i.out" 2> "$work/agent$i.err" &
  pids+=($!)
done
for i in $(seq 1 "$AGENTS"); do
  for _ in $(seq 1 100); do grep -q '^ready' "$work/agent$i.out" && break; sleep 0.1; done
  addr=$(sed -n 's/^listening grpc=//p' "$work/agent$i.out")
  echo "https://$addr" >> "$work/endpoints"
done
echo "agents ready: $(wc -l < "$work/endpoints")"

ask=("$bin/nodectl" --endpoints-file "$work/endpoints" --ca "$work/ca.crt" --cert "$work/op.crt"
  --key "$work/op.key" --tls-server-name nodectl-agent)

# Check that the work is really done: every node answered, the critical ones included.
set +e
"${ask[@]}" node check -o json > "$work/all.json"; code=$?
set -e
echo "all agents: exit $code, $(jq '[.nodes[] | select(.status == "ok")] | length' "$work/all.json") answered, $(jq '[.nodes[] | select(.status == "failed")] | length' "$work/all.json") failed, $(jq '[.fleet[] | select(.worst_finding != null and (.worst_finding | tostring | test("critical")))] | length' "$work/all.json") with a critical finding"
hyperfine --warmup 1 --runs "$RUNS" -i --export-json "$work/all-hyperfine.json" \
  "${ask[*]} node check -o json > $work/run.json" | sed -n '/Time/,/Range/p'

# 5 killed, 1 stopped: 44 answer, 6 fail, within the per-node deadline.
for i in 10 11 12 13 14; do kill "${pids[$((i - 1))]}"; done
stopped=${pids[14]}
kill -STOP "$stopped"
set +e
"${ask[@]}" --node-timeout 3s node check -o json > "$work/partial.json"; code=$?
set -e
echo "5 killed, 1 stopped: exit $code, $(jq '[.nodes[] | select(.status == "ok")] | length' "$work/partial.json") answered, $(jq '[.nodes[] | select(.status == "failed")] | length' "$work/partial.json") failed"
hyperfine --runs "$RUNS" -i \
  "${ask[*]} --node-timeout 3s node check -o json > $work/run.json" | sed -n '/Time/,/Range/p'
