"""The gunicorn worker class: a Uvicorn worker that keeps fastml's HTTP limits.

worker_class = "rest_api.worker.FastMLWorker"   (gunicorn/gunicorn-config.py)
"""

from __future__ import annotations

import sys
from typing import Any, ClassVar

from gunicorn.arbiter import Arbiter
from uvicorn.server import Server
from uvicorn_worker import UvicornWorker

from ML.config import Settings
from rest_api.http_limits import HttpLimits
from rest_api.http_protocol import LimitedHttpProtocol


class FastMLWorker(UvicornWorker):
    """Gunicorn's request-line and header limits, its keep-alive and graceful timeout reach
    Uvicorn through this class (the stock worker drops them), plus the head size and deadlines
    of `HttpLimits`. No `server: uvicorn` header is sent."""

    CONFIG_KWARGS: ClassVar[dict[str, Any]] = {"loop": "auto", "server_header": False}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        limits = HttpLimits.from_settings(
            Settings(),
            # 0 means "no limit" to gunicorn.
            max_request_line=self.cfg.limit_request_line or sys.maxsize,
            max_header_count=self.cfg.limit_request_fields or sys.maxsize,
            max_header_field=self.cfg.limit_request_field_size or sys.maxsize,
            keep_alive_timeout=self.cfg.keepalive,
        )
        # One class per worker process, carrying its limits to every connection it makes.
        self.config.http = type("WorkerHttpProtocol", (LimitedHttpProtocol,), {"limits": limits})
        # A recycling or stopping worker finishes its requests within gunicorn's graceful
        # timeout, then exits, also when gunicorn's master is not there to kill it.
        self.config.timeout_graceful_shutdown = self.cfg.graceful_timeout

    async def _serve(self) -> None:
        self.config.app = self.wsgi
        server = Server(config=self.config)
        self._install_sigquit_handler()
        # uvloop closes the listening sockets it serves. Handed gunicorn's wrappers it
        # cannot mark the socket inside closed, whose second close at shutdown then hits a
        # closed (or by then reused) descriptor: "Error while closing socket [Errno 9]".
        # Handed the sockets themselves, it detaches them.
        await server.serve(sockets=[listener.sock for listener in self.sockets])
        if not server.started:
            sys.exit(Arbiter.WORKER_BOOT_ERROR)
