"""Unknown query keys are refused with a 422 naming the known ones: a misspelt `?prob=true`
or `?limt=5` must not be ignored silently (and the OpenAPI document lists every key)."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator
from typing import Any

from fastapi import Depends, Request
from fastapi.dependencies.models import Dependant

from rest_api.errors import ApiError

# id(route) -> (route, its query keys); the route is kept so that its id is never reused.
_KNOWN_BY_ROUTE: dict[int, tuple[object, frozenset[str]]] = {}


def refuse_unknown_keys(keys: Iterable[str], known: Collection[str]) -> None:
    unknown = sorted(set(keys) - set(known))
    if unknown:
        takes = ", ".join(sorted(known)) if known else "no query parameters"
        raise ApiError(
            422,
            f"unknown query parameter {', '.join(map(repr, unknown))[:200]}; this route takes "
            f"{takes}",
            details=[{"field": key[:100], "error": "unknown query parameter"} for key in unknown],
        )


async def _check_query_keys(request: Request) -> None:
    # async: a plain function would be sent to the thread pool on every request.
    if not request.scope.get("query_string"):
        return
    route = request.scope.get("route")
    cached = _KNOWN_BY_ROUTE.get(id(route))
    if cached is not None:
        known = cached[1]
    else:
        dependant = getattr(route, "dependant", None)
        known = frozenset(_query_names(dependant)) if dependant is not None else frozenset()
        _KNOWN_BY_ROUTE[id(route)] = (route, known)
    refuse_unknown_keys(request.query_params.keys(), known)


def _query_names(dependant: Dependant) -> Iterator[str]:
    """The query keys of a route and of its dependencies."""
    for param in dependant.query_params:
        yield param.alias
    for dependency in dependant.dependencies:
        yield from _query_names(dependency)


# For a router's `dependencies=[...]`: its routes refuse query keys they do not declare.
KNOWN_QUERY_KEYS_ONLY: Any = Depends(_check_query_keys)
