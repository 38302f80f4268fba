#!/usr/bin/env python3
"""Compares a transcript in the docs with a real run: `docs-transcript.py NAME < output`.

The block marked `<!-- docs-test: transcript NAME -->` in README.md or docs/*.md is what the
output must be; `…` matches any text within a line, and a line that is only `…` any number of
lines (as in tests/src/docs.rs, which the Rust tests use). Exit code 1 with both texts when
they differ."""
import pathlib
import sys

root = pathlib.Path(__file__).resolve().parent.parent


def block(name):
    want = f"<!-- docs-test: transcript {name} -->"
    for path in [root / "README.md", *sorted((root / "docs").glob("*.md"))]:
        lines = path.read_text().split("\n")
        for i, line in enumerate(lines):
            if line.strip() == want:
                start = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```")) + 1
                end = next(j for j in range(start, len(lines)) if lines[j].startswith("```"))
                return path, lines[start:end]
    sys.exit(f"no block is marked {want}")


def line_matches(pattern, actual):
    parts = pattern.split("…")
    if len(parts) == 1:
        return pattern == actual
    if not actual.startswith(parts[0]):
        return False
    rest = actual[len(parts[0]):]
    for n, part in enumerate(parts[1:], 1):
        if n == len(parts) - 1:
            return rest.endswith(part)
        at = rest.find(part)
        if at < 0:
            return False
        rest = rest[at + len(part):]
    return True


def lines_match(pattern, actual):
    if not pattern:
        return not actual
    if pattern[0].strip() == "…":
        return any(lines_match(pattern[1:], actual[k:]) for k in range(len(actual) + 1))
    return bool(actual) and line_matches(pattern[0], actual[0]) and lines_match(pattern[1:], actual[1:])


name = sys.argv[1]
path, shown = block(name)
real = sys.stdin.read().rstrip("\n").split("\n")
if not lines_match(shown, real):
    print(f"{path.relative_to(root)}: the transcript {name!r} differs from this run", file=sys.stderr)
    print("--- shown\n" + "\n".join(shown) + "\n--- real\n" + "\n".join(real), file=sys.stderr)
    sys.exit(1)
