#!/usr/bin/env python3
"""Checks the module structure of src/: no module cycle, and no folder using
one below it in the dependency order of DESIGN.md. Reads every `crate::` and
`super::` path in the source (test modules excluded: they may use anything
their module can). Exit 1 with every finding, 0 when clean."""

import pathlib
import re
import sys

ORDER = ["util", "model", "telemetry", "config", "snapshot", "gateway",
         "request", "cluster", "control", "server", "cli"]

root = pathlib.Path(__file__).resolve().parent.parent / "src"


def module_of(path: pathlib.Path) -> tuple:
    rel = path.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "mod":
        parts.pop()
    return tuple(parts)


def is_test_file(path: pathlib.Path) -> bool:
    return path.name == "tests.rs"


modules = {}
for path in sorted(root.rglob("*.rs")):
    if path.name in ("lib.rs", "main.rs") and path.parent == root:
        continue
    if is_test_file(path):
        continue
    modules[module_of(path)] = path


def strip_tests(text: str) -> str:
    # Drop `#[cfg(test)] mod tests { ... }` blocks and comments.
    text = re.sub(r"//[^\n]*", "", text)
    out, i = [], 0
    for m in re.finditer(r"#\[cfg\(test\)\]\s*mod\s+\w+\s*\{", text):
        if m.start() < i:
            continue
        out.append(text[i:m.start()])
        depth, j = 1, m.end()
        while j < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
        i = j
    out.append(text[i:])
    return "".join(out)


def resolve(path_parts: list) -> tuple:
    """The longest known module that is a prefix of `path_parts`."""
    for n in range(len(path_parts), 0, -1):
        if tuple(path_parts[:n]) in modules:
            return tuple(path_parts[:n])
    return ()


edges = {m: set() for m in modules}
for mod, path in modules.items():
    text = strip_tests(path.read_text())
    # `use crate::a::{b, c::d}` and inline `crate::a::b` paths.
    for m in re.finditer(r"\bcrate((?:::\w+)+)(::\{[^;]*?\})?", text):
        base = m.group(1).strip(":").split("::")
        targets = [base]
        if m.group(2):
            inner = m.group(2)[3:-1]
            for item in re.split(r",(?![^{]*\})", inner):
                item = item.strip().split(" as ")[0]
                if item:
                    targets.append(base + [p for p in re.split(r"::", item.strip("{} ")) if p])
        for t in targets:
            dep = resolve(t)
            if dep and dep != mod:
                edges[mod].add(dep)
    for m in re.finditer(r"\bsuper((?:::\w+)*)", text):
        parent = mod[:-1] if path.name != "mod.rs" else mod[:-1]
        parts = [p for p in m.group(1).split("::") if p]
        dep = resolve(list(parent) + parts) or (parent if parent in modules else ())
        if dep and dep != mod:
            edges[mod].add(dep)

problems = []


def rank(mod: tuple) -> int:
    top = mod[0]
    return ORDER.index(top) if top in ORDER else -1


for mod, deps in edges.items():
    if rank(mod) < 0:
        problems.append(f"src/{'/'.join(mod)}: folder {mod[0]!r} is not in the dependency order {ORDER}")
        continue
    for dep in deps:
        if rank(dep) > rank(mod):
            problems.append(
                f"{'::'.join(mod)} uses {'::'.join(dep)}: {dep[0]} comes after {mod[0]} in the dependency order")
        # A module may use its own ancestors' items only through `super`;
        # a parent using its child is normal.

# Cycles (Tarjan's strongly connected components).
index, low, stack, on, sccs = {}, {}, [], set(), []


def strong(v):
    index[v] = low[v] = len(index)
    stack.append(v)
    on.add(v)
    for w in edges[v]:
        if w not in index:
            strong(w)
            low[v] = min(low[v], low[w])
        elif w in on:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        comp = []
        while True:
            w = stack.pop()
            on.discard(w)
            comp.append(w)
            if w == v:
                break
        if len(comp) > 1:
            sccs.append(comp)


sys.setrecursionlimit(10000)
for v in edges:
    if v not in index:
        strong(v)
for comp in sccs:
    names = sorted("::".join(m) for m in comp)
    problems.append("module cycle: " + " <-> ".join(names))

if problems:
    for p in problems:
        print("layers:", p)
    sys.exit(1)
print(f"layers: {len(modules)} modules, no cycle, every use goes up the dependency order")
