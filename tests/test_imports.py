"""No import cycles among hashmatch's modules, deferred imports inside functions included: a
cycle makes a module's import order matter and hides which layer depends on which."""
import ast
import pathlib

import hashmatch

PACKAGE = pathlib.Path(hashmatch.__file__).parent

def _modules(root: pathlib.Path) -> dict[str, pathlib.Path]:
    mods = {}
    for f in list(root.rglob("*.py")) + list(root.rglob("*.pyx")):
        name = ".".join(f.relative_to(root.parent).with_suffix("").parts)
        if name.endswith(".__init__"):
            name = name[: -len(".__init__")]
        mods[name] = f
    return mods


def _imports(name: str, path: pathlib.Path, mods) -> set[str]:
    """The hashmatch modules that module ``name`` imports, anywhere in its code."""
    if path.suffix == ".pyx":
        return set()
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    deps = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if not module.startswith("hashmatch"):
                continue
            submodules = [f"{module}.{a.name}" for a in node.names if f"{module}.{a.name}" in mods]
            deps.update(submodules)
            if len(submodules) < len(node.names) and module in mods:
                deps.add(module)
        elif isinstance(node, ast.Import):
            deps.update(a.name for a in node.names if a.name in mods)
    deps.discard(name)
    return deps


def _cycles(edges: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, groups = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(group)

    for v in list(edges):
        if v not in index:
            visit(v)
    return groups


def test_no_import_cycle_among_hashmatch_modules():
    mods = _modules(PACKAGE)
    edges = {name: _imports(name, path, mods) for name, path in mods.items()}
    assert "hashmatch.cluster" in edges["hashmatch.search"]  # the finder sees deferred imports
    assert [sorted(group) for group in _cycles(edges)] == []
