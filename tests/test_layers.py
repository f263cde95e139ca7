"""Layers only point down (docs/architecture.md#layers): the library never imports evaluation,
training or analysis; evaluation never imports training or analysis; training never imports
analysis; baselines import only geora.linalg and geora.init."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = (("analysis", 4), ("geora.training", 3), ("geora.evaluation", 2),
          ("geora", 1), ("baselines", 1))
BASELINES_MAY_IMPORT = {"geora.linalg", "geora.init"}


def layer(module: str) -> int | None:
    for prefix, level in LAYERS:
        if module == prefix or module.startswith(prefix + "."):
            return level
    return None


def imports(path: Path) -> list[str]:
    """Absolute project imports of one file (function-level imports included)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from geora import training` is geora.training: the most specific name counts
            found += [f"{node.module}.{a.name}" for a in node.names]
    return found


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def violations(files) -> list[str]:
    out = []
    for path in files:
        mod = module_name(path)
        own = layer(mod)
        for target in imports(path):
            theirs = layer(target)
            if theirs is not None and theirs > own:
                out.append(f"{mod} (layer {own}) imports {target} (layer {theirs})")
            if mod.startswith("baselines") and target.startswith("geora") and not any(
                    target == m or target.startswith(m + ".") for m in BASELINES_MAY_IMPORT):
                out.append(f"{mod} imports {target}: baselines use only geora.linalg / geora.init")
    return out


def project_files():
    for package in ("geora", "baselines", "analysis"):
        yield from (ROOT / package).rglob("*.py")


def test_imports_only_point_down():
    files = list(project_files())
    assert len(files) > 40
    assert violations(files) == []


def test_the_check_notices_an_upward_import(tmp_path, monkeypatch):
    fake = ROOT / "geora" / "evaluation" / "_layer_probe.py"
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: (
        "from geora.training.rundir import RunFolder\n" if self == fake
        else Path.open(self).read()))
    assert violations([fake]) == [
        "geora.evaluation._layer_probe (layer 2) imports geora.training.rundir.RunFolder (layer 3)"]
