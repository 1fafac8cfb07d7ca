# Sourced by bench/idle.sh and bench/idle-code-order.sh: builds the release agent on its own (as
# the Containerfile does: built with the client, the crates they share would get the union of
# their features, other symbol names and none of agent/idle-code.order) and the fake API server,
# makes $work with TLS material (bench/tls-certs.sh) and starts the fake API server there, its
# kubeconfig at $work/kubeconfig. Whatever is added to `pids` is stopped on exit.
. bench/tls-certs.sh
cargo build --release --quiet -p nodectl-agent --bins
cargo build --release --quiet -p nodectl-e2e --example fake_kube_server
bin=$PWD/target/release
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

make_certs "$work"
"$bin/examples/fake_kube_server" "$work" > "$work/kube.out" &
pids+=($!)
for _ in $(seq 1 100); do grep -q '^kubeconfig' "$work/kube.out" && break; sleep 0.1; done
