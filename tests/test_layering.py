"""The package's layering: each package imports only packages below it (the README's layout
table), the modules' imports have no cycle, and the core loads no figures."""

import ast
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "causal_unlearn"
# bottom to top; a package may import those on earlier lines (and itself)
LAYERS = [
    ("validation", "figures"),
    ("data",),
    ("models",),
    ("patching",),
    ("tracing",),
    ("localization",),
    ("evaluation",),
    ("unlearning",),
    ("auditing",),
    ("builtin",),
    ("viz",),
    ("demo",),
    ("cli",),
    ("__init__",),
]
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every causal_unlearn module `path` imports, at the top, inside functions or under
    TYPE_CHECKING alike: each is a dependency."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == "causal_unlearn"}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] == "causal_unlearn":
                found.add(node.module)
                found |= {f"{node.module}.{alias.name}" for alias in node.names if module_path(f"{node.module}.{alias.name}")}
    return {name for name in found if module_path(name)}


def module_path(name: str) -> Path | None:
    base = PACKAGE.parent.joinpath(*name.split("."))
    return next((p for p in (base.with_suffix(".py"), base / "__init__.py") if p.exists()), None)


def package_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


GRAPH = {module_name(path): imports_of(path) for path in PACKAGE.rglob("*.py")}


def test_every_package_has_a_layer():
    assert {package_of(module) for module in GRAPH} == set(RANK)


def test_no_package_imports_one_above_it():
    upward = sorted((module, target) for module, targets in GRAPH.items() for target in targets
                    if RANK[package_of(target)] > RANK[package_of(module)])
    assert upward == []


def test_the_modules_imports_have_no_cycle():
    # a package's __init__ re-exports its modules; importing a sibling module through it is the
    # same dependency as importing the module itself, so edges into an __init__ are kept
    state, cycles = defaultdict(int), []

    def visit(module, path):
        state[module] = 1
        for target in sorted(GRAPH.get(module, ())):
            if target == module or (module.startswith(target + ".") and module_path(target).name == "__init__.py"):
                continue  # a module importing its own package's __init__ runs first, not in a cycle
            if state[target] == 1:
                cycles.append(path[path.index(target):] + [target] if target in path else [module, target])
            elif state[target] == 0:
                visit(target, path + [target])
        state[module] = 2

    for module in sorted(GRAPH):
        if state[module] == 0:
            visit(module, [module])
    assert cycles == []


def test_importing_the_package_loads_no_figures():
    code = "import sys, causal_unlearn; print(sorted(m for m in ('plotly', 'ipywidgets') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("name", ["TraceResult", "AveragedEffects", "TraceComparison", "UnlearnResult", "AuditResult"])
def test_every_result_plots_through_its_registered_figure(name):
    import causal_unlearn as cu
    from causal_unlearn.figures import figure_function

    figure = figure_function(getattr(cu, name))
    assert figure.__module__.startswith("causal_unlearn.viz.") and figure.__name__.startswith("plot_")


def test_a_type_without_a_figure_says_so():
    from causal_unlearn.figures import Plottable

    class Unregistered(Plottable):
        pass

    with pytest.raises(TypeError, match="no figure is registered for Unregistered"):
        Unregistered().plot()
