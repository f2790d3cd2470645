"""ML/ is a plain library: it never imports the web layer."""

from __future__ import annotations

import ast

from ML.config import PROJECT_DIR

FORBIDDEN = ("fastapi", "starlette", "rest_api", "uvicorn", "gunicorn")


def test_ml_never_imports_web_code() -> None:
    offenders = []
    for path in (PROJECT_DIR / "ML").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path}: {n}" for n in names if n.split(".")[0] in FORBIDDEN]
    assert offenders == []
