"""nginx in front of hub replicas: its configuration (grpc_pass over HTTP/2) and its process."""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import Sequence
from pathlib import Path

# Passive health checks (open-source nginx has no active ones): a replica that
# refuses a connection is left out for FAIL_TIMEOUT seconds. A request goes to
# the next replica only when it could not be sent (nginx never resends a POST,
# which every gRPC call is, once a replica has received it): losing a replica
# costs the requests in flight on it and nothing else.
FAIL_TIMEOUT = 5
CONF = """\
# Written by `txverify cluster up`; nginx runs in the foreground with -p {prefix}.
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    upstream txverify_hubs {{
{servers}
        # nginx sends one request per upstream connection (no multiplexing), so it
        # needs a connection per request in flight; this many stay open between
        # requests, per worker, instead of a connect per request above it.
        keepalive 1024;
    }}
    server {{
        listen {listen} http2;
        # Requests are a few hundred bytes; the hub refuses more than 1 MiB itself.
        client_max_body_size 2m;
        location / {{
            grpc_pass grpc://txverify_hubs;
            grpc_next_upstream error;
            grpc_next_upstream_tries 2;
            grpc_connect_timeout 1s;
            grpc_read_timeout 60s;
            grpc_send_timeout 60s;
        }}
    }}
}}
"""


class NginxError(RuntimeError):
    """nginx is missing or would not start; the message says how to fix it."""


def nginx_binary() -> str:
    found = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if Path(p).exists()), None
    )
    if found is None:
        raise NginxError("nginx not found: install the Debian package (apt-get install nginx)")
    return found


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now (nginx cannot be told to pick one and say which)."""
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def write_conf(prefix: Path, listen: str, upstreams: Sequence[str]) -> Path:
    """nginx.conf in `prefix` (made) for a gRPC front at `listen` over `upstreams` (host:port)."""
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (prefix / sub).mkdir(parents=True, exist_ok=True)
    servers = "\n".join(
        f"        server {u} max_fails=1 fail_timeout={FAIL_TIMEOUT}s;" for u in upstreams
    )
    conf = prefix / "nginx.conf"
    conf.write_text(CONF.format(prefix=prefix, listen=listen, servers=servers), encoding="utf-8")
    return conf


def start(prefix: Path, listen: str, upstreams: Sequence[str]) -> subprocess.Popen[str]:
    """nginx in the foreground (stopped with SIGTERM, as the other children are)."""
    binary = nginx_binary()
    conf = write_conf(prefix, listen, upstreams)
    argv = [binary, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")]
    checked = subprocess.run([*argv, "-t", "-q"], capture_output=True, text=True, check=False)
    if checked.returncode != 0:
        raise NginxError(f"nginx refused its configuration {conf}: {checked.stderr.strip()}")
    return subprocess.Popen([*argv, "-g", "daemon off;"], text=True)
