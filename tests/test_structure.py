"""The package's import structure: no import circle among facefit's modules (imports inside functions
count too), no module taking another module's private (underscore) names, and the subpackages' imports
running one way, down the layers the README's Architecture section draws."""
import ast
import re
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
    assert len(graph) > 40 and "fitter.photo.coarse" in graph["fitter.video.bundle"]
    assert _cycles(graph) == []


def test_no_module_imports_another_modules_private_names():
    _, private = _graph()
    assert private == {}


# The layers, lowest first: a module may import from its own layer and the layers below it, never above.
LAYERS = (
    ("fitter.errors", "fitter.io", "fitter.registry", "fitter.shaders"),  # the foundation
    ("fitter.geometry", "fitter.detection"),
    ("fitter.model",),
    ("fitter.photo",),
    ("fitter.registration",),
    ("fitter.prepared",),
    ("fitter.install", "fitter.video", "fitter.augment", "fitter.datasets", "fitter.batch", "fitter.report"),
    ("fitter.bench",),
    ("fitter.cli",),
)


def _layer(module):
    """Index in LAYERS of the package or module that holds `module` (None: not placed)."""
    for i, names in enumerate(LAYERS):
        if any(module == n or module.startswith(n + ".") for n in names):
            return i
    return None


def _upward_imports(graph):
    """[(importer, imported)] where a module imports from a layer above its own."""
    return [(m, d) for m, deps in sorted(graph.items()) if m != "fitter"
            for d in deps if d != "fitter" and _layer(d) > _layer(m)]


def test_every_module_has_a_layer_and_imports_run_down_the_layers():
    graph, _ = _graph()
    assert [m for m in graph if m != "fitter" and _layer(m) is None] == []
    assert _upward_imports(graph) == []
    # the checker sees an upward import
    assert _upward_imports({"fitter.geometry.mesh": ["fitter.photo.coarse"], "fitter.photo.coarse": []}) == \
        [("fitter.geometry.mesh", "fitter.photo.coarse")]


def test_one_levenberg_marquardt_loop():
    """The damping schedule lives in fitter.geometry.least_squares alone: no other module grows or shrinks a
    damping factor (the coarse fit and the bundle adjustment call levenberg_marquardt)."""
    damping = re.compile(r"\bmu\s*(\*=|/=|=\s*max\(\s*mu\s*/)")
    loops = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "fitter").rglob("*.py") if damping.search(p.read_text()))
    assert loops == ["fitter/geometry/least_squares.py"]


K_ENTRY = re.compile(r"\bK\s*\[\s*[012]\s*,\s*[012]\s*\]|\bK\s*\[\s*[012]\s*\]|inv\(\s*[\w.]*K\b|[\w.]*\bK\.T\b")


def test_the_k_entry_check_sees_intrinsic_algebra():
    for text in ("u - K[0, 2]", "fx, s, cx = K[0]", "np.linalg.inv(cam.K)", "X @ mesh.K.T"):
        assert K_ENTRY.search(text), text
    assert not K_ENTRY.search("camera.K.copy()") and not K_ENTRY.search("Camera(K, R, t)")


def test_only_the_camera_module_reads_the_intrinsics_matrix():
    """Projection, rays and the rest of the intrinsic algebra live in fitter.geometry.camera: no other
    library module indexes K, inverts it or multiplies by its transpose."""
    found = [f"{p.relative_to(ROOT)}: {line.strip()}" for p in sorted((ROOT / "fitter").rglob("*.py")) + sorted(
        (ROOT / "cli").rglob("*.py")) if p.name != "camera.py" for line in p.read_text().splitlines()
        if K_ENTRY.search(line.split("#")[0])]
    assert not found, found
