#!/usr/bin/env bash
# Prints the classifier's rule patterns as POSIX extended regexes (one per line) for `grep -E -f`:
# named and non-capturing groups become plain groups, \d \s \S become bracket classes, and the
# `^` anchor (which applies after the message prefix) is dropped.
set -euo pipefail
grep -E "^pattern = " "$(dirname "$0")/../knowledge/kernel-rules.toml" |
  sed -E "s/^pattern = ['\"](.*)['\"]$/\1/" |
  sed -E 's/\(\?P<[a-z_]+>/(/g; s/\(\?:/(/g; s/\\d/[0-9]/g; s/\\s/[[:space:]]/g; s/\\S/[^[:space:]]/g; s/\*\?/*/g; s/^\^//; s/\(\^/(/g'
