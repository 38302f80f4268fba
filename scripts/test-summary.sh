#!/usr/bin/env bash
# Sums the "test result:" lines of every tier in a `make test` log and prints one closing line,
# so the whole run ends with its real totals rather than the last test binary's.
set -euo pipefail
log="${1:?usage: test-summary.sh LOG}"
sed 's/\x1b\[[0-9;]*m//g' "$log" | awk '
    /test result: / {
        for (i = 1; i <= NF; i++) {
            if ($(i+1) ~ /^passed;?$/) passed += $i
            if ($(i+1) ~ /^failed;?$/) failed += $i
            if ($(i+1) ~ /^ignored;?$/) ignored += $i
        }
    }
    END {
        printf "Total: %d passed, %d failed, %d skipped\n", passed, failed, ignored
        exit (failed > 0 || passed == 0)
    }'
