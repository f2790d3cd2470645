"""Route modules stay thin: none imports another (shared code lives outside rest_api/routes)."""

from __future__ import annotations

import ast

from ML.config import PROJECT_DIR

ROUTES_DIR = PROJECT_DIR / "rest_api" / "routes"


def test_no_route_module_imports_another() -> None:
    offenders = []
    for path in ROUTES_DIR.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.ImportFrom) and node.module:
                if node.module.startswith("rest_api.routes") or (
                    node.module == "rest_api" and any(a.name == "routes" for a in node.names)
                ):
                    offenders.append(f"{path.name}: from {node.module}")
                if node.level > 0:
                    offenders.append(f"{path.name}: relative import")
    assert offenders == []
