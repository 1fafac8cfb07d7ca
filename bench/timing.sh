# Sourced by the benchmark scripts: wall-clock timing, best of $RUNS, output kept in $work/out.

now() { date +%s.%N; }

# Best wall seconds of $RUNS runs of "$@"; the last run's standard output is in "$work/out".
best_of() {
  # Output goes to a file, not /dev/null: GNU grep stops at the first match when it sees
  # /dev/null, which would time nothing.
  local best=""
  for _ in $(seq "$RUNS"); do
    local s e t
    s=$(now); "$@" > "$work/out"; e=$(now)
    t=$(echo "$e - $s" | bc -l)
    if [ -z "$best" ] || [ "$(echo "$t < $best" | bc -l)" = 1 ]; then best=$t; fi
  done
  echo "$best"
}
