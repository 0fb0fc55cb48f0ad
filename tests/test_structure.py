"""The package's import structure: no import circle among facefit's modules (imports inside functions
count too) and no module taking another module's private (underscore) names."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = (("fitter", "fitter"), ("cli", "fitter.cli"), ("models", "fitter.registry"))


def _modules():
    """Dotted module name -> (path, is a package's __init__)."""
    mods = {}
    for folder, package in PACKAGES:
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = [p for p in path.relative_to(ROOT / folder).with_suffix("").parts if p != "__init__"]
            mods[".".join([package, *parts])] = (path, path.name == "__init__.py")
    return mods


def _imports(name, is_package, tree):
    """(imported module names, [(module, private name)]) of every import statement in `tree`."""
    targets, private = set(), []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")[:len(name.split(".")) - node.level + (1 if is_package else 0)]
            else:
                base = []
            module = ".".join(base + ([node.module] if node.module else []))
            targets.add(module)
            targets.update(f"{module}.{a.name}" for a in node.names)
            private += [(module, a.name) for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
    return targets, private


def _graph():
    mods = _modules()
    graph, private = {}, {}
    for name, (path, is_package) in mods.items():
        targets, priv = _imports(name, is_package, ast.parse(path.read_text()))
        graph[name] = sorted(t for t in targets if t in mods and t != name)
        if priv:
            private[name] = priv
    return graph, private


def _cycles(graph):
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_the_checker_sees_a_circle_and_a_private_import():
    graph = {"a": ["b"], "b": ["c"], "c": ["a"], "d": ["a"]}
    assert _cycles(graph) == [["a", "b", "c"]]
    targets, private = _imports("fitter.video.bundle", False, ast.parse(
        "from ..coarse import _cauchy, fit_landmarks\nfrom . import tracks\n"))
    assert {"fitter.coarse", "fitter.coarse.fit_landmarks", "fitter.video", "fitter.video.tracks"} <= targets
    assert private == [("fitter.coarse", "_cauchy")]


def test_no_import_circle():
    graph, _ = _graph()
    assert len(graph) > 40 and "fitter.coarse" in graph["fitter.video.bundle"]
    assert _cycles(graph) == []


def test_no_module_imports_another_modules_private_names():
    _, private = _graph()
    assert private == {}
