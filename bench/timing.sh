# Sourced by the benchmark scripts: wall-clock timing, best of $RUNS, output kept in $work/out.
# (Best of, and runs of the commands compared alternated where a script can: a slow spell of a
# shared machine then falls on both.)

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

# Wall seconds of one run of "$@"; its standard output is in "$work/out" (a file: see above).
time_once() {
  local s e
  s=$(now); "$@" > "$work/out"; e=$(now)
  echo "$e - $s" | bc -l
}

# The smallest and the median of the numbers on standard input, one per line: "MIN MEDIAN".
min_median() {
  sort -g | awk '{ v[NR] = $1 } END { printf "%s %s\n", v[1], v[int((NR + 1) / 2)] }'
}
