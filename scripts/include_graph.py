#!/usr/bin/env python3
"""Folder dependency graph of src/ and bench/: for each folder, the folders its files include
("X/Y.h" resolved against src/ or the repository root, as the build does). Prints the graph of
the library code, then the edges only tests add (files named *test*), then any cycle of either.
Exits 1 on any cycle, in the library code or through tests: the folders are layers and must stay
a DAG, tests included.

  scripts/include_graph.py [REPO]      (REPO defaults to the repository holding this script)
  scripts/include_graph.py -h|--help   (prints this text)
"""
import os
import re
import sys

if any(a in ("-h", "--help") for a in sys.argv[1:]):
    print(__doc__.strip())
    sys.exit(0)
if len(sys.argv) > 2 or (len(sys.argv) == 2 and sys.argv[1].startswith("-")):
    sys.exit(__doc__.strip() + "\n\nusage: scripts/include_graph.py [REPO]")
root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
src = os.path.join(root, "src")
include = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def folder_of(path):
    """The node of a file: its folder relative to src/, or relative to the root outside src/."""
    d = os.path.dirname(os.path.relpath(path, root))
    return os.path.relpath(d, "src") if d == "src" or d.startswith("src" + os.sep) else d


lib, test = {}, {}
for top in ("src", "bench"):
    for d, _, files in os.walk(os.path.join(root, top)):
        for f in files:
            if not f.endswith((".h", ".cuh", ".cpp", ".cu")):
                continue
            path = os.path.join(d, f)
            node = folder_of(path)
            lib.setdefault(node, set())
            edges = test.setdefault(node, set()) if "test" in f else lib[node]
            with open(path, errors="replace") as fh:
                for name in include.findall(fh.read()):
                    for base in (src, root):
                        if os.path.exists(os.path.join(base, name)):
                            target = folder_of(os.path.join(base, name))
                            if target != node:
                                edges.add(target)
                            break


def cycles(graph):
    found, state = [], {}

    def visit(n, path):
        state[n] = 1
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                found.append(path[path.index(m):] + [m])
            elif m not in state:
                visit(m, path + [m])
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n, [n])
    return found


both = {n: lib.get(n, set()) | test.get(n, set()) for n in set(lib) | set(test)}
width = max(len(n) for n in both)
print("library code:")
for n in sorted(lib):
    print(f"  {n:{width}} -> {', '.join(sorted(lib[n])) or '-'}")
print("tests add:")
for n in sorted(test):
    extra = test[n] - lib.get(n, set())
    if extra:
        print(f"  {n:{width}} -> {', '.join(sorted(extra))}")
lib_cycles = cycles(lib)
for c in lib_cycles:
    print("cycle in the library code: " + " -> ".join(c))
test_cycles = [c for c in cycles(both) if c not in lib_cycles]
for c in test_cycles:
    print("cycle through tests: " + " -> ".join(c))
sys.exit(1 if lib_cycles or test_cycles else 0)
