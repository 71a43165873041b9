#!/usr/bin/env python3
"""Checks the layout rules of ARCHITECTURE.md that the compiler does not:

1. No import circles between the modules of a crate. A module is a file under `src/` (or a
   directory with `mod.rs`); an edge `a -> b` is any `crate::b...` (or `super::b`) path in the non-test code of
   `a` (a `use` line or an inline path). A module may use its own submodules and its ancestors'
   items without forming an edge; sibling and cousin edges are what must stay acyclic.
2. No source file over MAX_LINES lines, whole (inline test modules count: move big ones to a
   `tests.rs` next to the module). Test-only files (`tests.rs`, `tests/`) are exempt; `benches/`
   is checked too.

Usage: python3 .ci/layout_check.py [CRATE_DIR ...]   (default: every crate of the workspace)
Exits 1 and names the circle or the file when a rule is broken.
"""

import os
import re
import sys

MAX_LINES = 600
CRATES = ["core", "config", "proto-frontends", "server", "client", "."]

USE_RE = re.compile(r"\bcrate::([a-z_][a-z0-9_]*)(?:::([a-z_][a-z0-9_]*))?")
SUPER_RE = re.compile(r"\bsuper::([a-z_][a-z0-9_]*)")
TEST_START = re.compile(r"^\s*#\[cfg\((all\()?test")


def module_path(src, path):
    """`src/a/b.rs` -> ('a', 'b'); `src/a/mod.rs` -> ('a',); `src/lib.rs` -> ()."""
    rel = os.path.relpath(path, src)[: -len(".rs")].split(os.sep)
    if rel[-1] in ("mod", "lib", "main"):
        rel = rel[:-1]
    return tuple(rel)


def non_test_lines(path):
    lines = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if TEST_START.match(line):
                break
            lines.append(line)
    return lines


def count_lines(path):
    with open(path, encoding="utf-8") as f:
        return sum(1 for _ in f)


def check_sizes(folder):
    errors = []
    for root, _, names in os.walk(folder):
        for n in names:
            path = os.path.join(root, n)
            if n.endswith(".rs") and count_lines(path) > MAX_LINES:
                errors.append(f"{path}: {count_lines(path)} lines (limit {MAX_LINES}): split it")
    return errors


def is_test_file(path):
    name = os.path.basename(path)
    return name == "tests.rs" or name.startswith("loom_") or "/tests/" in path.replace(os.sep, "/")


def check_crate(crate):
    src = os.path.join(crate, "src")
    if not os.path.isdir(src):
        return []
    errors = []
    files = []
    for root, _, names in os.walk(src):
        for n in names:
            if n.endswith(".rs"):
                files.append(os.path.join(root, n))
    modules = {}
    for path in sorted(files):
        if is_test_file(path):
            continue
        lines = non_test_lines(path)
        total = count_lines(path)
        if total > MAX_LINES:
            errors.append(f"{path}: {total} lines (limit {MAX_LINES}): split it")
        modules[module_path(src, path)] = lines
    known = set(modules)
    edges = {m: set() for m in modules}
    for m, lines in modules.items():
        for line in lines:
            if line.lstrip().startswith("//"):
                continue
            found = []
            for a, b in USE_RE.findall(line):
                found.append((a, b) if b and (a, b) in known else (a,))
            if m:
                found += [m[:-1] + (c,) for c in SUPER_RE.findall(line)]
            for target in found:
                if target not in known:
                    continue
                # Own descendants and own ancestors are not edges.
                if target[: len(m)] == m or m[: len(target)] == target:
                    continue
                edges[m].add(target)
    # Collapse every module to its top-level ancestor below the crate root for the cycle check
    # too, so that a -> b::x and b::y -> a is caught.
    top = {}
    for m, targets in edges.items():
        if not m:
            continue
        for t in targets:
            if t and t[0] != m[0]:
                top.setdefault(m[0], set()).add(t[0])
    for graph, name in ((edges, "module"), (top, "top-level module")):
        cycle = find_cycle(graph)
        if cycle:
            shown = " -> ".join("::".join(c) if isinstance(c, tuple) else c for c in cycle)
            errors.append(f"{crate}: {name} import circle: {shown}")
    return errors


def find_cycle(graph):
    WHITE, GREY, BLACK = 0, 1, 2
    color = {}
    stack = []

    def visit(n):
        color[n] = GREY
        stack.append(n)
        for t in sorted(graph.get(n, ())):
            c = color.get(t, WHITE)
            if c == GREY:
                return stack[stack.index(t):] + [t]
            if c == WHITE:
                found = visit(t)
                if found:
                    return found
        stack.pop()
        color[n] = BLACK
        return None

    for n in sorted(graph):
        if color.get(n, WHITE) == WHITE:
            found = visit(n)
            if found:
                return found
    return None


def main():
    os.chdir(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    crates = sys.argv[1:] or CRATES
    errors = []
    for c in crates:
        errors += check_crate(c)
    if not sys.argv[1:]:
        errors += check_sizes("benches")
    for e in errors:
        print(e)
    if errors:
        sys.exit(1)
    print(f"layout ok: {', '.join(crates)} and benches (no import circles, no file over {MAX_LINES} lines)")


if __name__ == "__main__":
    main()
