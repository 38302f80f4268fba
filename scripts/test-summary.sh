#!/usr/bin/env bash
# Sums the "test result:" lines of every tier in a `make test` log and prints one closing line,
# so the whole run ends with its real totals rather than the last test binary's. Before it, one
# line per integration run (each begins with the "==> integration tests:" line that
# scripts/integration-test.sh prints); an integration run that passed no test fails the summary.
set -euo pipefail
log="${1:?usage: test-summary.sh LOG}"
sed 's/\x1b\[[0-9;]*m//g' "$log" | awk '
    BEGIN { run = "unit, lint and pg_test tiers"; order[++runs] = run }
    /^==> integration tests: / {
        run = substr($0, length("==> integration tests: ") + 1)
        if (!(run in seen)) order[++runs] = run
        seen[run] = 1
    }
    /test result: / {
        for (i = 1; i <= NF; i++) {
            if ($(i+1) ~ /^passed;?$/) { passed += $i; run_passed[run] += $i }
            if ($(i+1) ~ /^failed;?$/) { failed += $i; run_failed[run] += $i }
            if ($(i+1) ~ /^ignored;?$/) { ignored += $i; run_ignored[run] += $i }
        }
    }
    END {
        for (r = 1; r <= runs; r++) {
            name = order[r]
            printf "  %s: %d passed, %d failed, %d skipped\n", name, run_passed[name], run_failed[name], run_ignored[name]
            if (r > 1 && run_passed[name] == 0) empty = 1
        }
        printf "Total: %d passed, %d failed, %d skipped\n", passed, failed, ignored
        exit (failed > 0 || passed == 0 || empty)
    }'
