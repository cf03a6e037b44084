#!/usr/bin/env python3
"""Checks the house rules of `src/` that the compiler does not: no import cycle between the
crate's top-level modules, and a README whose Layout section says what is there.

    scripts/check-layers.py            # check (scripts/test.sh runs this)
    scripts/check-layers.py --write    # rewrite the README's layer table from the code

A module's dependencies are the other top-level modules its non-test code names through
`crate::` (in `use` lines and in paths). The layers are the longest chains of them: a module sits
one layer above the highest module it uses, so code only ever reaches down. A cycle fails the
check with the files that make up each edge of it. The README must list every top-level module
under `## Layout` and hold the layer table exactly as computed (between the `layers` markers).
"""

import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SRC = os.path.join(ROOT, "src")
README = os.path.join(ROOT, "README.md")
BEGIN = "<!-- layers: written and checked by scripts/check-layers.py -->"
END = "<!-- /layers -->"
# The binary's entry points sit above every layer; the PII crate is a dependency, not a module.
ENTRY_POINTS = {"lib", "main"}
EXTERNAL = {"pii"}


def non_test_code(text):
    """The file's text without its `#[cfg(test)]` module and comments."""
    test = re.search(r"^#\[cfg\(test\)\]\s*\nmod tests", text, re.M)
    if test:
        text = text[: test.start()]
    return re.sub(r"//[^\n]*", "", text)


def names_in_use_tree(tree):
    """Top-level names of a `use crate::{a::b, c, d::{e, f}}` tree."""
    depth, current, names = 0, "", []
    for ch in tree:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        if depth == 0 and ch == ",":
            names.append(current)
            current = ""
        else:
            current += ch
    names.append(current)
    return [m.group(1) for m in (re.match(r"\s*(\w+)", name) for name in names) if m]


def module_graph():
    """{module: {dependency: [files]}} over the top-level modules of src/."""
    modules = set()
    edges = {}
    for directory, _, files in os.walk(SRC):
        for name in sorted(files):
            if not name.endswith(".rs"):
                continue
            path = os.path.join(directory, name)
            relative = os.path.relpath(path, SRC)
            module = relative.split(os.sep)[0].removesuffix(".rs")
            if module in ENTRY_POINTS:
                continue
            modules.add(module)
            code = non_test_code(open(path, encoding="utf-8").read())
            used = set(re.findall(r"\bcrate::(\w+)", code))
            for tree in re.findall(r"\buse crate::\{(.*?)\};", code, re.S):
                used.update(names_in_use_tree(tree))
            for dependency in used - {module, "self"}:
                edges.setdefault(module, {}).setdefault(dependency, []).append(relative)
    for module in modules:
        edges.setdefault(module, {})
    return edges


def cycles(edges):
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []
    counter = [0]

    def visit(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for target in edges.get(node, {}):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def layers(edges):
    """Layer number of each module: 0 for one that uses none, else one above its highest use."""
    level = {}

    def of(node):
        if node not in level:
            level[node] = 1 + max((of(d) for d in edges.get(node, {}) if d not in EXTERNAL), default=-1)
        return level[node]

    for node in edges:
        of(node)
    table = {}
    for node, number in level.items():
        table.setdefault(number, []).append(node)
    return "\n".join(f"{number}  {' '.join(sorted(table[number]))}" for number in sorted(table))


def layer_block(edges):
    return f"{BEGIN}\n```\n{layers(edges)}\n```\n{END}"


def main():
    edges = module_graph()
    problems = []
    for component in cycles(edges):
        lines = [f"import cycle between {', '.join(component)}:"]
        for source in component:
            for target, files in sorted(edges[source].items()):
                if target in component:
                    lines.append(f"  {source} -> {target}: {', '.join(sorted(set(files)))}")
        problems.append("\n".join(lines))
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 1
    readme = open(README, encoding="utf-8").read()
    block = layer_block(edges)
    if "--write" in sys.argv:
        start, end = readme.index(BEGIN), readme.index(END) + len(END)
        open(README, "w", encoding="utf-8").write(readme[:start] + block + readme[end:])
        print("README.md: layer table written")
        return 0
    if block not in readme:
        problems.append(
            "README.md: the layer table is not the code's (scripts/check-layers.py --write), expected:\n" + block
        )
    layout = readme[readme.index("## Layout") :]
    for module in sorted(edges):
        entry = f"src/{module}/" if os.path.isdir(os.path.join(SRC, module)) else f"src/{module}.rs"
        if entry not in layout:
            problems.append(f"README.md: `## Layout` does not list {entry}")
    for entry in sorted(set(re.findall(r"^(src/\S+)", layout, re.M))):
        if not os.path.exists(os.path.join(ROOT, entry)):
            problems.append(f"README.md: `## Layout` lists {entry}, which does not exist")
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 1
    print(f"layers: {len(edges)} modules, no import cycle, README layout current")
    return 0


if __name__ == "__main__":
    sys.exit(main())
