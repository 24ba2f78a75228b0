"""The package's shape, checked on its source: what the runtime loads, import cycles, one exception hierarchy.

- `import onnxport.runtime` (and serving an export through a pipeline) loads no deep-learning framework, none of
  the development tooling (`onnxport.dev`: parity matrix, demo), no exporter and no reference model, in a fresh
  interpreter; nothing the runtime imports, even inside a function, leads to them;
- the imports of src/onnxport form no cycle, counting those inside functions;
- the artifact layer (`onnxport.artifact`: the export directory's format) imports no framework, exporter or runtime;
- no `global` statement: lazy singletons are `functools.cache` functions;
- every exception class defined under src/onnxport derives from `onnxport.errors.OnnxportError`.
"""

from __future__ import annotations

import ast
import builtins
import importlib
import json
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
PACKAGE = SRC / "onnxport"
FRAMEWORKS = ("torch", "tensorflow", "jax", "flax", "transformers")


def _loaded_modules(code: str, cwd: Path) -> list[str]:
    """sys.modules after running ``code`` in a fresh interpreter (its last stdout line is the list)."""
    script = code + "\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))\n"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


# What serving never needs: the export side (exporters, the reference models they trace) and the dev tooling.
SERVING_NEVER_LOADS = ("onnxport.dev", "onnxport.exporters", "onnxport.reference_models")


def _inside(name: str, packages: tuple[str, ...]) -> bool:
    return any(name == package or name.startswith(package + ".") for package in packages)


def _forbidden(modules: list[str]) -> list[str]:
    return [name for name in modules
            if name.split(".")[0] in FRAMEWORKS or _inside(name, SERVING_NEVER_LOADS)
            or (name.startswith("onnxport.") and name.rsplit(".", 1)[-1] in ("parity", "demo"))]


def test_runtime_import_loads_no_framework_no_exporter_and_no_dev_tooling(tmp_path):
    modules = _loaded_modules("import onnxport.runtime", tmp_path)
    assert "onnxport.runtime" in modules and "onnxruntime" in modules
    assert _forbidden(modules) == []


def test_serving_a_pipeline_loads_no_framework_no_exporter_and_no_dev_tooling(tmp_path, checkpoint_factory):
    """The runtime's lazy paths too: loading the export (RoFormer: the rotary lowering), its tokenizer, and one
    call through the pipeline."""
    from onnxport.exporters import export

    checkpoint = checkpoint_factory("roformer", "ForSequenceClassification")
    (Path(checkpoint) / "vocab.txt").write_text("\n".join(
        ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world", "今天", "天", "气"]) + "\n")
    export_dir = tmp_path / "export"
    export(checkpoint, export_dir, framework="pt", task="text-classification", validate=False)
    modules = _loaded_modules(
        "from onnxport.runtime import pipeline\n"
        f"scores = pipeline('text-classification', {str(export_dir)!r}, provider='cpu')(['hello world'], top_k=None)\n"
        "assert len(scores[0]) == 2, scores\n", tmp_path)
    assert "onnxport.runtime.pipelines" in modules and "onnxport.tokenizers" in modules
    assert "onnxport.artifact.rotary_op" in modules  # the rotary lowering ran, from the artifact layer
    assert "onnxport.artifact.attention_op" in modules  # and the attention lowering
    assert _forbidden(modules) == []


# ----------------------------------------------------------------------------- the source, parsed
def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}
TREES = {name: ast.parse(path.read_text(encoding="utf-8"), str(path)) for name, path in MODULES.items()}


def _package_of(module: str) -> str:
    return module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]


def _absolute(module: str, node: ast.ImportFrom) -> str:
    """The module an ``from ... import`` names, relative levels resolved against ``module``'s package."""
    if not node.level:
        return node.module or ""
    base = _package_of(module)
    for _ in range(node.level - 1):
        base = base.rpartition(".")[0]
    return f"{base}.{node.module}" if node.module else base


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(node: ast.AST):
    """Every import statement under ``node`` that can run: in the module body, functions, methods and classes
    alike (an import inside a function is as much a dependency as one at the top), but not under
    `if TYPE_CHECKING:`."""
    yield from _imports_among(ast.iter_child_nodes(node))


def _imports_among(nodes):
    for node in nodes:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from _imports_among(node.orelse)
        else:
            yield from _imports(node)


def _known_module(name: str) -> str:
    """The onnxport module ``name`` is, or lies in (``a.b.Class`` -> ``a.b``); '' outside the package."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name


def import_graph() -> dict[str, dict[str, int]]:
    """module -> {imported onnxport module: line of its first import}, every import counted (``_imports``)."""
    graph = {}
    for module, tree in TREES.items():
        edges: dict[str, int] = {}
        for node in _imports(tree):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                source = _absolute(module, node)
                # `from package import submodule` imports the submodule; `from module import name` the module.
                targets = [f"{source}.{alias.name}" if f"{source}.{alias.name}" in MODULES else source
                           for alias in node.names]
            for target in map(_known_module, targets):
                if target and target != module:
                    edges.setdefault(target, node.lineno)
        graph[module] = edges
    return graph


def find_cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """One cycle (as a path a -> b -> ... -> a) per strongly connected group of modules (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for target in graph[module]:
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == module:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for module in graph:
        if module not in index:
            visit(module)
    cycles = []
    for group in groups:  # a shortest way back to the group's first module, through the group
        start, members = group[0], set(group)
        paths, seen = [[start]], {start}
        while paths:
            path = paths.pop(0)
            following = [t for t in graph[path[-1]] if t in members]
            if start in following:
                cycles.append(path + [start])
                break
            for target in following:
                if target not in seen:
                    seen.add(target)
                    paths.append(path + [target])
    return cycles


def _describe(cycle: list[str], graph) -> str:
    return " -> ".join(f"{a} ({MODULES[a].relative_to(SRC)}:{graph[a][b]})" for a, b in zip(cycle, cycle[1:])) + \
        f" -> {cycle[-1]}"


def test_cycle_finder_finds_a_cycle_and_its_path():
    graph = {"a": {"b": 1}, "b": {"c": 2}, "c": {"a": 3, "d": 4}, "d": {}}
    assert find_cycles(graph) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b": 1}, "b": {}}) == []


def test_the_import_graph_counts_imports_inside_functions():
    graph = import_graph()
    # The runtime reads the io spec (at the top), the tokenizer only when it loads one (inside a function),
    # the CLI's parity command its lists; the runtime's session checks the export's file names inside a function.
    assert "onnxport.artifact.io_spec" in graph["onnxport.runtime.models"] and "onnxport.dev" in graph["onnxport.dev.parity"]
    assert "onnxport.tokenizers" in graph["onnxport.runtime.models"]
    assert "onnxport.exporters.pipeline" in graph["onnxport.cli"]  # `onnxport validate`: inside cmd_validate
    tree = ast.parse("import a\ndef f():\n    from . import b\nclass C:\n    def g(self):\n        import c\n"
                     "if TYPE_CHECKING:\n    import d\nelse:\n    import e\n")
    assert [ast.unparse(node) for node in _imports(tree)] == ["import a", "from . import b", "import c", "import e"]


def test_no_import_cycle_in_the_package():
    """No cycle among src/onnxport's modules, not even through an import inside a function."""
    graph = import_graph()
    cycles = find_cycles(graph)
    assert not cycles, "import cycles:\n" + "\n".join(_describe(cycle, graph) for cycle in cycles)


def _reachable(graph: dict[str, dict[str, int]], roots: list[str]) -> dict[str, str]:
    """Every module the roots reach through the graph -> the module that first imports it."""
    seen = {root: "" for root in roots}
    queue = list(roots)
    while queue:
        module = queue.pop(0)
        for target in graph[module]:
            if target not in seen:
                seen[target] = module
                queue.append(target)
    return seen


def test_the_runtime_reaches_no_exporter_and_no_reference_model():
    """Through every import, top-level or inside a function: the runtime reads exports through the artifact
    layer, so no code path of serving can load the export side."""
    graph = import_graph()
    runtime = [module for module in graph if _inside(module, ("onnxport.runtime",))]
    reached = _reachable(graph, runtime)
    assert "onnxport.artifact.spec_file" in reached and "onnxport.artifact.rotary_op" in reached
    wrong = {module: via for module, via in reached.items() if _inside(module, SERVING_NEVER_LOADS)}
    assert not wrong, f"the runtime reaches the export side: {wrong} (module: imported by)"


ARTIFACT_MAY_IMPORT = ("onnxport.artifact", "onnxport.configs", "onnxport.families", "onnxport.errors")


def test_the_artifact_layer_imports_no_framework_exporter_or_runtime():
    """The export format sits below both sides: it imports only itself, configs, families and errors of onnxport,
    and of the outside world no deep-learning framework (numpy, and onnx for the rotary op's graph code)."""
    graph = import_graph()
    layer = [module for module in graph if _inside(module, ("onnxport.artifact",))]
    assert {"onnxport.artifact.io_spec", "onnxport.artifact.spec_file", "onnxport.artifact.files",
            "onnxport.artifact.input_checks", "onnxport.artifact.rotary_op"} <= set(layer)
    wrong = {module: sorted(t for t in graph[module] if not _inside(t, ARTIFACT_MAY_IMPORT)) for module in layer}
    assert not any(wrong.values()), wrong
    allowed = {"onnxport", "numpy", "onnx", *sys.stdlib_module_names}
    outside = {module: sorted({top for node in _imports(TREES[module]) for top in _top_level_names(node)} - allowed)
               for module in layer}
    assert not any(outside.values()), outside


def _top_level_names(node: ast.Import | ast.ImportFrom) -> list[str]:
    """The top-level packages an import statement loads (relative imports stay in onnxport)."""
    if isinstance(node, ast.Import):
        return [alias.name.split(".")[0] for alias in node.names]
    return ["onnxport"] if node.level else [(node.module or "").split(".")[0]]


def test_no_global_statement():
    """Module state is not rebound from functions: a lazy singleton is a `functools.cache` function."""
    found = [f"{MODULES[module].relative_to(SRC)}:{node.lineno} global {', '.join(node.names)}"
             for module, tree in TREES.items() for node in ast.walk(tree) if isinstance(node, ast.Global)]
    assert not found, found
    assert isinstance(ast.parse("def f():\n    global x\n").body[0].body[0], ast.Global)  # what the scan looks for


# ----------------------------------------------------------------------------- one exception hierarchy
BASE = ("onnxport.errors", "OnnxportError")


class _ClassIndex:
    """Each class defined under src/onnxport, with its bases resolved through imports: is it an exception,
    and does it derive from OnnxportError?"""

    def __init__(self) -> None:
        self.classes: dict[tuple[str, str], ast.ClassDef] = {}
        self.names: dict[str, dict[str, tuple[str, str]]] = {}  # module -> local name -> (module, attribute)
        for module, tree in TREES.items():
            names = self.names[module] = {}
            for node in ast.walk(tree):
                if isinstance(node, ast.ClassDef):
                    self.classes.setdefault((module, node.name), node)
                elif isinstance(node, ast.Import):
                    for alias in node.names:
                        if alias.asname:
                            names[alias.asname] = (alias.name, "")
                        else:
                            names[alias.name.split(".")[0]] = (alias.name.split(".")[0], "")
                elif isinstance(node, ast.ImportFrom):
                    source = _absolute(module, node)
                    for alias in node.names:
                        names[alias.asname or alias.name] = (source, alias.name)
        self.memo: dict[tuple[str, str], tuple[bool, bool]] = {}

    def of_class(self, module: str, name: str) -> tuple[bool, bool]:
        """(is an exception, derives from OnnxportError) for a class defined in ``module``."""
        key = (module, name)
        if key not in self.memo:
            self.memo[key] = (False, False)  # a base that leads back here adds nothing
            verdicts = [self.of_base(module, base) for base in self.classes[key].bases]
            self.memo[key] = (any(e for e, _ in verdicts) or key == BASE,
                              any(d for _, d in verdicts) or key == BASE)
        return self.memo[key]

    def of_name(self, module: str, dotted: str) -> tuple[bool, bool]:
        """A (possibly dotted) name as written in ``module``."""
        head, _, rest = dotted.partition(".")
        if not rest and (module, head) in self.classes:
            return self.of_class(module, head)
        if head in self.names.get(module, {}):
            source, attribute = self.names[module][head]
            return self.of_qualified(".".join(part for part in (source, attribute, rest) if part))
        value = getattr(builtins, dotted, None)
        return (isinstance(value, type) and issubclass(value, BaseException), False)

    def of_qualified(self, qualified: str) -> tuple[bool, bool]:
        module = _known_module(qualified)
        if module:
            rest = qualified[len(module) + 1:]
            return self.of_name(module, rest) if rest else (False, False)
        top = qualified.split(".")[0]
        if top in sys.stdlib_module_names:  # imported to ask; the standard library is cheap and safe
            module_name, _, attribute = qualified.rpartition(".")
            try:
                value = getattr(importlib.import_module(module_name), attribute)
            except (ImportError, AttributeError):
                value = None
            return (isinstance(value, type) and issubclass(value, BaseException), False)
        # A framework's class (torch, tensorflow, ...) is not imported here: its name says if it is an error.
        return (qualified.endswith(("Error", "Exception", "Warning")), False)

    def of_base(self, module: str, base: ast.expr) -> tuple[bool, bool]:
        if isinstance(base, ast.Subscript):  # Generic[T], ...
            base = base.value
        try:
            dotted = ast.unparse(base)
        except Exception:
            return (False, False)
        return self.of_name(module, dotted)


def test_the_exception_scan_knows_exceptions():
    index = _ClassIndex()
    assert index.of_class(*BASE) == (True, True)
    assert index.of_class("onnxport.errors", "FrameworkNotInstalledError") == (True, True)
    assert index.of_qualified("json.JSONDecodeError") == (True, False)
    assert index.of_qualified("pickle.Unpickler") == (False, False)
    assert index.of_name("onnxport.configs", "RoFormerConfig") == (False, False)


def test_every_exception_derives_from_onnxport_error():
    index = _ClassIndex()
    exceptions, outside = [], []
    for (module, name), node in sorted(index.classes.items()):
        is_exception, derives = index.of_class(module, name)
        if is_exception:
            exceptions.append(name)
            if not derives:
                outside.append(f"{MODULES[module].relative_to(SRC)}:{node.lineno} {name}")
    from onnxport import errors

    assert set(errors.__all__) <= set(exceptions)
    assert not outside, "exceptions outside the OnnxportError hierarchy:\n" + "\n".join(outside)


def test_only_the_cli_imports_the_dev_tooling():
    """Anywhere in a module, functions included: the runtime, exporters and models never reach parity or demo."""
    importers = set()
    for module, tree in TREES.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                source = _absolute(module, node)
                names = [source] + [f"{source}.{alias.name}" for alias in node.names]
            else:
                continue
            if any(name == "onnxport.dev" or name.startswith("onnxport.dev.") for name in names):
                importers.add(module)
    assert {module for module in importers if not module.startswith("onnxport.dev")} == {"onnxport.cli"}
