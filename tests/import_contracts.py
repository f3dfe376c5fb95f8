"""The project's import contracts, checked by walking the source's syntax trees (no import is run).

1. Layers: the library (``sen2naip_hub``) never imports the builder (``dataset_builder``) or the Space
   (``spaces``); the builder never imports the Space.
2. No import cycle between the project's modules, counting every import (one inside a function too:
   a cycle hidden in a lazy import is still two modules that cannot be understood apart).
3. No module uses another module's private names (``from x import _y`` or ``x._y`` on an imported
   project module), dunders aside.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

PACKAGES: tuple[str, ...] = ("sen2naip_hub", "dataset_builder")
#: What each layer must never import.
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "sen2naip_hub": ("dataset_builder", "spaces"),
    "dataset_builder": ("spaces",),
}


@dataclass
class Module:
    name: str
    path: Path
    is_package: bool
    imports: set[str] = field(default_factory=set)  # the project modules it imports
    all_imports: set[str] = field(default_factory=set)  # everything it imports, by name
    private_uses: list[str] = field(default_factory=list)


def discover(root: Path) -> dict[str, Module]:
    """Every module of the project's packages (and the Space's ``app.py``) under ``root``."""
    modules = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            if is_package:
                parts = parts[:-1]
            modules[".".join(parts)] = Module(".".join(parts), path, is_package)
    for path in sorted((root / "spaces").glob("*/app.py")):
        name = f"spaces.{path.parent.name.replace('-', '_')}.app"
        modules[name] = Module(name, path, False)
    return modules


def _resolve(module: Module, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.name.split(".")
    base = base if module.is_package else base[:-1]
    base = base[: len(base) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def _targets(module: Module, node: ast.AST, known: dict[str, Module]) -> Iterator[tuple[str, list[str]]]:
    """``(imported module, names taken from it)`` of one import statement."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            yield alias.name, []
    elif isinstance(node, ast.ImportFrom):
        source = _resolve(module, node)
        for alias in node.names:
            submodule = f"{source}.{alias.name}"
            yield (submodule, []) if submodule in known else (source, [alias.name])


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _owner(name: str, known: dict[str, Module]) -> str | None:
    """The project module ``name`` belongs to (itself, or its nearest known parent), or None."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in known:
            return candidate
    return None


def analyse(modules: dict[str, Module]) -> None:
    """Fill each module's imports and private uses."""
    for module in modules.values():
        tree = ast.parse(module.path.read_text("utf-8"))
        aliases: dict[str, str] = {}
        for node in ast.walk(tree):
            for target, names in _targets(module, node, modules):
                owner = _owner(target, modules) or target
                module.all_imports.add(target)
                if owner in modules and owner != module.name:
                    module.imports.add(owner)
                    module.private_uses += [f"from {owner} import {n}" for n in names if _is_private(n)]
                if isinstance(node, ast.Import):
                    for alias in node.names:
                        aliases[alias.asname or alias.name] = alias.name
                elif owner in modules and not names:
                    aliases.update({a.asname or a.name: target for a in node.names})
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and _is_private(node.attr)
                and isinstance(node.value, ast.Name)
            ):
                target = aliases.get(node.value.id)
                if target in modules and target != module.name:
                    module.private_uses.append(f"{target}.{node.attr}")


def layer_violations(modules: dict[str, Module]) -> list[str]:
    found = []
    for module in modules.values():
        layer = module.name.split(".")[0]
        for target in sorted(module.all_imports):
            if target.split(".")[0] in FORBIDDEN.get(layer, ()):
                found.append(f"{module.name} imports {target}")
    return found


def cycles(modules: dict[str, Module]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(name: str) -> None:
        index[name] = low[name] = len(index)
        stack.append(name)
        on_stack.add(name)
        for target in sorted(modules[name].imports):
            if target not in index:
                visit(target)
                low[name] = min(low[name], low[target])
            elif target in on_stack:
                low[name] = min(low[name], index[target])
        if low[name] == index[name]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == name:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for name in sorted(modules):
        if name not in index:
            visit(name)
    return found


def check(root: Path) -> list[str]:
    """Every contract broken in the tree under ``root``, one line each (empty: all hold)."""
    modules = discover(root)
    analyse(modules)
    problems = [f"layer: {v}" for v in layer_violations(modules)]
    problems += [f"cycle: {' -> '.join(group)}" for group in cycles(modules)]
    problems += [f"private: {m.name} uses {use}" for m in modules.values() for use in m.private_uses]
    return problems
