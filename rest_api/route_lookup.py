"""Which routes a path matches: every method it allows (for a 405's `Allow`), and the path a
request with a stray or missing trailing slash meant (for its 404).

Starlette answers a 405 with the methods of the first route that matched the path only
(`GET` for `/models/{name}`, which DELETE also serves), and redirects a trailing slash to a
URL built from the Host header; the app turns that redirect off and names the path instead.
"""

from __future__ import annotations

from collections.abc import Iterable

from starlette.routing import BaseRoute, Match

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


def allowed_methods(routes: Iterable[BaseRoute], path: str) -> list[str]:
    """Every method some route serves at `path`, asked of the routes themselves (FastAPI
    nests included routers, so their routes are not a flat list)."""
    routes = list(routes)
    return [method for method in METHODS if _is_served(routes, method, path)]


def _is_served(routes: list[BaseRoute], method: str, path: str) -> bool:
    scope = {"type": "http", "method": method, "path": path, "root_path": ""}
    return any(route.matches(scope)[0] is Match.FULL for route in routes)


def path_meant(routes: Iterable[BaseRoute], method: str, path: str) -> str | None:
    """`path` with its trailing slash removed or added, if a route serves `method` there."""
    other = path.rstrip("/") if path.endswith("/") else f"{path}/"
    if not other or other == path:
        return None
    return other if method in allowed_methods(routes, other) else None
