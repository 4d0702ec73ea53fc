"""The package's house rules, checked on the source: layers import only downwards, no import circles, no module over
~500 lines, no reach into another module's private names, and gradio only in the UI package.

Layers, bottom to top (a module may import its own package and any lower layer, never a higher one):
core (the paper's math) < models, io < saliency, data, pipeline < train, cases < evaluation < studio < ui < cli.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "diffuse_core"
MAX_LINES = 500
RANK = {"core": 0, "models": 1, "io": 1, "saliency": 2, "data": 2, "pipeline": 2, "train": 3, "cases": 3, "run": 3,
        "evaluation": 4, "volumes": 4, "studio": 5, "ui": 6, "cli": 7, "__main__": 8, "__init__": 0}


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports(path: Path, modules: dict[str, Path]) -> list[tuple[str, list[str]]]:
    """(imported module, imported names) for every import of ``diffuse_core`` in the file, at any depth."""
    found = []
    tree = ast.parse(path.read_text())
    typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
                   for n in ast.walk(node)}
    for node in ast.walk(tree):
        if id(node) in typing_only:  # annotations only: no import at run time
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("diffuse_core"):
            names = [a.name for a in node.names]
            if node.module in modules:
                found.append((node.module, [n for n in names if f"{node.module}.{n}" not in modules]))
            for n in names:  # "from diffuse_core.data import synthbrain" imports a module
                if f"{node.module}.{n}" in modules:
                    found.append((f"{node.module}.{n}", []))
        elif isinstance(node, ast.Import):
            found += [(a.name, []) for a in node.names if a.name.startswith("diffuse_core.")]
        assert not (isinstance(node, ast.ImportFrom) and node.level), f"{path}: use absolute diffuse_core imports"
    return found


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_every_module_is_short():
    long = {m: n for m, p in _modules().items() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines (split them by idea): {long}"


def test_layers_import_only_downwards_and_never_private_names():
    modules = _modules()
    bad = []
    for mod, path in modules.items():
        for target, names in _imports(path, modules):
            src, dst = _layer(mod), _layer(target)
            if src != dst and RANK[dst] > RANK[src]:
                bad.append(f"{mod} imports {target} (layer {dst} is above {src})")
            private = [n for n in names if n.startswith("_") and not n.startswith("__") and target != mod]
            if private:
                bad.append(f"{mod} reaches into {target}'s private {private}")
    assert not bad, "\n".join(bad)


def test_no_import_circles():
    modules = _modules()
    graph = {m: {t for t, _ in _imports(p, modules) if t in modules and t != m} for m, p in modules.items()}
    # a package's __init__ importing its own modules is how re-exports work, not a circle
    for m in graph:
        graph[m] = {t for t in graph[m] if not (modules[m].name == "__init__.py" and t.startswith(m + "."))}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                raise AssertionError("import circle: " + " -> ".join(stack[stack.index(t):] + [t]))
            if t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_only_the_ui_package_imports_gradio():
    """No module outside diffuse_core/ui/ names gradio (at any depth, functions included), and every one of them
    imports in a fresh interpreter without gradio getting loaded on the way (through another package)."""
    offenders = []
    for mod, path in _modules().items():
        if _layer(mod) == "ui":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            if any(n.split(".")[0] in ("gradio", "gradio_client") for n in names):
                offenders.append(mod)
    assert not offenders, f"gradio imported outside diffuse_core.ui: {offenders}"
    outside = sorted(m for m in _modules() if _layer(m) != "ui" and m != "diffuse_core.__main__")
    code = ("import importlib, sys\n"
            f"for name in {outside!r}:\n"
            "    importlib.import_module(name)\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('gradio', 'gradio_client')))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PACKAGE.parent,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]", f"importing the modules outside ui loads {done.stdout.strip()}"
