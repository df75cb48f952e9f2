"""pyproject's runtime dependencies are what the package imports: every third-party module that
causal_unlearn/ imports (at the top, inside functions, under TYPE_CHECKING, or by a string given
to importlib.import_module) is declared, and every declared dependency is imported or listed
below with the reason the package needs it anyway."""

import ast
import importlib.metadata
import re
import sys
import tomllib
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "causal_unlearn"

# import name -> distribution, where the two differ
DISTRIBUTIONS = {
    "sklearn": "scikit-learn",
    "rouge_score": "rouge-score",
    "yaml": "pyyaml",
    "PIL": "pillow",
    "transformer_lens": "transformer-lens",
    "huggingface_hub": "huggingface-hub",
}
# imported, but not declared: a declared dependency requires it, and the import is guarded
PROVIDED_BY = {
    # viz/static_export.py finds a Chrome that `kaleido_get_chrome` downloaded through kaleido's
    # browser manager, under `except ImportError`
    "choreographer": "kaleido",
}
# imported inside a function under `except ImportError`, declared as an optional extra: module -> extra
OPTIONAL = {
    "datasets": "hub-data",  # data/tofu.py: load_tofu / load_muse from the hub, with a clear error without it
    # auditing/precision.py: nf4_weights, with a clear error without it (the audit then skips the 4-bit copy)
    "bitsandbytes": "bitsandbytes",
}
# declared, never imported by name
NEEDED_UNIMPORTED = {
    "anywidget": "plotly's FigureWidget (the live figures of TraceExplorer and UnlearnDashboard) subclasses "
                 "anywidget.AnyWidget, and plotly does not require anywidget",
    "kaleido": "plotly.io.write_image / to_image (viz.export) print figures through kaleido",
}


def normalized(distribution: str) -> str:
    return re.sub(r"[-_.]+", "-", distribution).lower()


def requirement_name(requirement: str) -> str:
    return normalized(re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement).group(1))


def declared() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {requirement_name(r) for r in project["dependencies"]}


def imported_modules() -> dict[str, set[str]]:
    """Every third-party top-level module causal_unlearn/ imports -> where ("file:line")."""
    found = defaultdict(set)
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                    and isinstance(node.args[0].value, str):
                called = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
                if called in ("import_module", "__import__", "find_spec"):
                    names = [node.args[0].value]
            for name in names:
                top = name.split(".")[0]
                if top and top != "causal_unlearn" and top not in sys.stdlib_module_names:
                    found[top].add(f"{path.relative_to(ROOT)}:{node.lineno}")
    return dict(found)


IMPORTED = imported_modules()


def distribution_of(module: str) -> str:
    return normalized(PROVIDED_BY.get(module) or DISTRIBUTIONS.get(module, module))


def optional_extras() -> dict[str, set[str]]:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"].get("optional-dependencies", {})
    return {extra: {requirement_name(r) for r in requirements} for extra, requirements in extras.items()}


def test_the_scan_sees_imports_inside_functions():
    """accelerate and pyarrow are imported only inside functions; nnsight at the top too."""
    assert {"accelerate", "pyarrow", "nnsight", "torch"} <= set(IMPORTED)


def test_every_imported_module_is_declared():
    missing = {module: sorted(where) for module, where in IMPORTED.items()
               if distribution_of(module) not in declared() and module not in OPTIONAL}
    assert missing == {}, "declare these in pyproject.toml's dependencies (map the module in DISTRIBUTIONS if " \
                          "its distribution is named otherwise)"


def test_every_declared_dependency_is_imported_or_explained():
    used = {distribution_of(module) for module in IMPORTED} | {normalized(d) for d in NEEDED_UNIMPORTED}
    assert sorted(declared() - used) == [], "nothing in causal_unlearn/ imports these: drop them, or say in " \
                                            "NEEDED_UNIMPORTED why the package needs them"


def test_the_lists_here_are_current():
    needed = {normalized(d) for d in NEEDED_UNIMPORTED}
    assert needed <= declared()
    by_name = {normalized(DISTRIBUTIONS.get(m, m)) for m in IMPORTED if m not in PROVIDED_BY}
    assert needed & by_name == set(), "imported by name now: drop it from NEEDED_UNIMPORTED"
    assert set(PROVIDED_BY) <= set(IMPORTED), "no longer imported: drop it from PROVIDED_BY"
    assert {normalized(d) for d in PROVIDED_BY.values()} <= declared()
    extras = optional_extras()
    for module, extra in OPTIONAL.items():
        assert module in IMPORTED, f"{module} is no longer imported: drop it from OPTIONAL"
        assert distribution_of(module) in extras.get(extra, set()), f"declare {module} in the [{extra}] extra"
        assert distribution_of(module) not in declared(), f"{module} is a hard dependency now: drop it from OPTIONAL"


@pytest.mark.parametrize("module, provider", sorted(PROVIDED_BY.items()))
def test_the_providers_require_what_they_provide(module, provider):
    try:
        requires = importlib.metadata.requires(provider) or []
    except importlib.metadata.PackageNotFoundError:
        pytest.skip(f"{provider} is not installed")
    assert normalized(module) in {requirement_name(r) for r in requires if "extra ==" not in r}
