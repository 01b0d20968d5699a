"""DESIGN.md's package table: broker/, bridge/, viewer/ and emulator/ import `rtdp` and themselves only;
`rtdp` imports none of them, except its CLI layer (cli.py, serve.py), which composes them."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMPONENTS = ("broker", "bridge", "viewer", "emulator")
CLI_LAYER = {"rtdp/cli.py", "rtdp/serve.py"}


def imported_packages(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("package", COMPONENTS)
def test_a_component_imports_only_rtdp_and_itself(package: str) -> None:
    forbidden = set(COMPONENTS) - {package}
    wrong = {
        str(path.relative_to(ROOT)): sorted(imported_packages(path) & forbidden)
        for path in sorted((ROOT / package).rglob("*.py"))
    }
    assert {name: found for name, found in wrong.items() if found} == {}


def test_rtdp_imports_no_component_outside_its_cli_layer() -> None:
    wrong = {
        str(path.relative_to(ROOT)): sorted(imported_packages(path) & set(COMPONENTS))
        for path in sorted((ROOT / "rtdp").rglob("*.py"))
        if str(path.relative_to(ROOT)) not in CLI_LAYER
    }
    assert {name: found for name, found in wrong.items() if found} == {}
