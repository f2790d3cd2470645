"""Several fastml replicas behind nginx on 127.0.0.1, sharing one model folder: the topology of
deploy/nginx/one-machine.conf, started for the system tests and the benchmark. Given a Redis
(`broker_url`), it runs in the Celery mode, with Celery workers on the same model folder.

The nginx configuration is the shipped one with only its addresses changed (the listen port
and the replicas' upstream lines), so what is tested is what the README tells users to run.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from testing.celery_workers import CeleryWorker, start_worker, stop_worker
from testing.servers import (
    ADMIN,
    POLL_SECONDS,
    PROJECT_DIR,
    READY_DEADLINE_SECONDS,
    Server,
    ServerError,
    free_port,
    is_ready,
    start_server,
    stop_server,
)

if TYPE_CHECKING:
    import httpx

NGINX_DIR = PROJECT_DIR / "deploy" / "nginx"
ONE_MACHINE_CONF = NGINX_DIR / "one-machine.conf"
_UPSTREAM_LINE = re.compile(r"^([ \t]*)server 127\.0\.0\.1:\d+ (.*);\n", re.MULTILINE)
_LISTEN_LINE = re.compile(r"listen 127\.0\.0\.1:\d+;")


@dataclass
class Topology:
    """nginx (its own process) in front of `replicas`, each a gunicorn server; in the Celery
    mode, `celery_workers` run the jobs."""

    url: str
    replicas: list[Server]
    nginx: subprocess.Popen[bytes]
    work_dir: Path
    model_dir: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    celery_workers: list[CeleryWorker] = field(default_factory=list)

    def client(self, **kwargs: Any) -> httpx.Client:
        """An httpx client logged in as ADMIN, talking to nginx."""
        import httpx

        return httpx.Client(base_url=self.url, auth=ADMIN, timeout=30, **kwargs)

    def nginx_output(self) -> str:
        with contextlib.suppress(OSError):
            return (self.work_dir / "nginx" / "nginx.out").read_text(errors="replace")
        return "(no output)"


def nginx_config(listen_port: int, upstream_ports: list[int]) -> str:
    """deploy/nginx/one-machine.conf listening on `listen_port`, in front of `upstream_ports`."""
    text = ONE_MACHINE_CONF.read_text()
    first = _UPSTREAM_LINE.search(text)
    if first is None or not _LISTEN_LINE.search(text):
        raise ServerError(f"{ONE_MACHINE_CONF} has no upstream `server` or `listen` line")
    indent, options = first.group(1), first.group(2)
    upstreams = "".join(f"{indent}server 127.0.0.1:{port} {options};\n" for port in upstream_ports)
    text = _UPSTREAM_LINE.sub("", text)
    text = text[: first.start()] + upstreams + text[first.start() :]
    return _LISTEN_LINE.sub(f"listen 127.0.0.1:{listen_port};", text)


def start_nginx(work_dir: Path, upstream_ports: list[int]) -> tuple[str, subprocess.Popen[bytes]]:
    """nginx (Debian's, from PATH) on a free port in front of `upstream_ports`."""
    nginx = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")
    if nginx is None:
        raise ServerError("nginx is not installed (Debian: apt-get install nginx)")
    prefix = work_dir / "nginx"
    prefix.mkdir(parents=True, exist_ok=True)
    shutil.copy(NGINX_DIR / "proxy.conf", prefix / "proxy.conf")  # included beside it
    port = free_port()
    config = prefix / "nginx.conf"
    config.write_text(nginx_config(port, upstream_ports))
    with (prefix / "nginx.out").open("wb") as output:
        process = subprocess.Popen(
            [nginx, "-p", str(prefix), "-c", str(config)],
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return f"http://127.0.0.1:{port}", process


def start_topology(
    work_dir: Path,
    *,
    replicas: int = 2,
    workers: int = 2,
    extra_env: dict[str, str] | None = None,
    model_dir: Path | None = None,
    admin: tuple[str, str] | None = ADMIN,
    broker_url: str | None = None,
    celery_workers: int = 2,
) -> Topology:
    """`replicas` gunicorn servers sharing `model_dir` (default `work_dir/models`), and nginx
    in front; returns once /health/ready answers 200 through nginx. Stops what it started if
    anything fails. `admin=None`: the first replica generates the admin, the others read it.

    With `broker_url` (redis://..., the caller's Redis) the replicas run in the Celery mode
    and `celery_workers` workers of one pool process each start once the replicas are ready
    (the first replica generates the secret key they share). `extra_env` goes to both."""
    model_dir = model_dir or work_dir / "models"
    env = {"FASTML_MODEL_DIR": str(model_dir), **(extra_env or {})}
    if broker_url:
        env["FASTML_BROKER_URL"] = broker_url
    servers: list[Server] = []
    workers_started: list[CeleryWorker] = []
    nginx: subprocess.Popen[bytes] | None = None
    try:
        for index in range(replicas):
            replica_dir = work_dir / f"replica-{index + 1}"
            servers.append(
                start_server(
                    replica_dir, env, name=f"replica-{index + 1}", workers=workers, admin=admin
                )
            )
        for index in range(celery_workers if broker_url else 0):
            worker_dir = work_dir / f"celery-{index + 1}"
            workers_started.append(
                start_worker(worker_dir, str(broker_url), env, f"w{index + 1}", model_dir)
            )
        ports = [int(server.url.rsplit(":", 1)[1]) for server in servers]
        url, nginx = start_nginx(work_dir, ports)
        topology = Topology(url, servers, nginx, work_dir, model_dir, env, workers_started)
        _wait_for_nginx(topology)
        return topology
    except BaseException:
        if nginx is not None:
            _stop_process(nginx)
        for worker in workers_started:
            stop_worker(worker)
        for server in servers:
            stop_server(server)
        raise


def stop_topology(topology: Topology) -> None:
    _stop_process(topology.nginx)
    for worker in topology.celery_workers:
        stop_worker(worker)
    for server in topology.replicas:
        stop_server(server)


def _wait_for_nginx(topology: Topology) -> None:
    deadline = time.monotonic() + READY_DEADLINE_SECONDS
    while time.monotonic() < deadline:
        if topology.nginx.poll() is not None:
            raise ServerError(f"nginx exited: {topology.nginx_output()}")
        if is_ready(topology.url):
            return
        time.sleep(POLL_SECONDS)
    raise ServerError(f"nginx at {topology.url} was not ready: {topology.nginx_output()}")


def _stop_process(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
