"""The package's structure, checked from its source: no import cycles between modules or packages, Lightning
only in training/ (and the CLI that builds the Trainer), a task-agnostic diffusion core, and an inference path
that never imports the training or hub stacks."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "fusiondiff"


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def _runtime_imports(tree: ast.AST) -> list[tuple[str, list[str]]]:
    """(module, imported names) of every import, at any depth, except under ``if TYPE_CHECKING:``."""
    found: list[tuple[str, list[str]]] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend((alias.name, []) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, [alias.name for alias in node.names]))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def imports_of(name: str) -> tuple[set[str], set[str]]:
    """(fusiondiff modules, third-party top-level packages) that module ``name`` imports at run time."""
    tree = ast.parse(MODULES[name].read_text())
    ours, theirs = set(), set()
    for module, names in _runtime_imports(tree):
        if module == "fusiondiff" or module.startswith("fusiondiff."):
            subs = [f"{module}.{n}" for n in names if f"{module}.{n}" in MODULES]
            ours.update(subs or [module])
            if len(subs) < len(names):
                ours.add(module)
        else:
            theirs.add(module.split(".")[0])
    ours.discard(name)
    return {m for m in ours if m in MODULES}, theirs


GRAPH = {name: imports_of(name)[0] for name in MODULES}


def package_of(module: str) -> str:
    """The first level below fusiondiff (``diffusion``, ``tasks``, ``pipeline``, ...)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "fusiondiff"


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan), i.e. the import cycles."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            strong(v)
    return found


def test_the_walker_finds_a_cycle_and_lazy_imports():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    code = "import os\ndef f():\n    from fusiondiff.tasks import base\nif TYPE_CHECKING:\n    import lightning\n"
    assert _runtime_imports(ast.parse(code)) == [("os", []), ("fusiondiff.tasks", ["base"])]
    assert "fusiondiff.tasks.base" in GRAPH["fusiondiff.tasks"]  # the package imports its submodules


def test_no_import_cycle_between_modules():
    assert cycles(GRAPH) == []


def test_no_import_cycle_between_packages():
    packages: dict[str, set[str]] = {}
    for module, deps in GRAPH.items():
        packages.setdefault(package_of(module), set()).update(package_of(d) for d in deps if package_of(d) != package_of(module))
    assert cycles(packages) == []


def test_lightning_only_in_training_and_the_train_cli():
    users = {name for name in MODULES if {"lightning", "pytorch_lightning"} & imports_of(name)[1]}
    allowed = {name for name in users if name.startswith("fusiondiff.training") or name == "fusiondiff.cli.train"}
    assert users == allowed and users


def test_diffusion_core_is_task_agnostic():
    """The diffusion core imports only itself, the registry and filters (plain image filters that import
    nothing of the project)."""
    assert not imports_of("fusiondiff.filters")[0]
    for name in (m for m in MODULES if m.startswith("fusiondiff.diffusion")):
        ours, theirs = imports_of(name)
        assert all(package_of(m) in ("diffusion", "registry", "filters") for m in ours), (name, ours)
        assert not {"cv2", "lightning", "skimage", "kornia"} & theirs, (name, theirs)


def test_inference_path_imports_neither_training_nor_hub_stacks(tmp_path):
    """``infer.py`` in mode=fuse on the built-in example: no Lightning, wandb, diffusers or transformers."""
    out = tmp_path / "fused.png"
    code = (
        "import sys; from fusiondiff.cli.infer import infer; from hydra import compose, initialize_config_dir; "
        f"initialize_config_dir(config_dir={str(SRC.parent / 'conf')!r}, version_base='1.3'); "
        f"infer(compose(config_name='infer', overrides=['output={out}'])); "
        "bad = [m for m in ('lightning', 'pytorch_lightning', 'wandb', 'diffusers', 'transformers') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    assert out.is_file()
