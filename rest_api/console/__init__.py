"""The web console at /ui: server-rendered pages whose script acts through the JSON API."""

from rest_api.console.pages import router

__all__ = ["router"]
