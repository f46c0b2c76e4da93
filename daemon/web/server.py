"""The node's HTTP server: cheroot (CherryPy's production WSGI server) in a thread.

cheroot rather than wsgiref or Werkzeug's development server: it is built for production
(a pool of worker threads, request timeouts, HTTP/1.1 keep-alive) and stops cleanly from
another thread, which the node needs when it shuts down.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from cheroot import wsgi

log = logging.getLogger(__name__)

# A client that stops reading (a stuck scraper, a slow browser) must not hold a worker
# for ever.
REQUEST_TIMEOUT_S = 10.0
WORKER_THREADS = 8


class WebServer:
    """A WSGI application served on ``host:port`` in a daemon thread.

    Parameters
    ----------
    host, port
        Where to listen (port 0 = any free port; see ``port``).
    app
        The WSGI application (``daemon.web.app_factory.build_web_app``).
    """

    def __init__(self, host: str, port: int, app: Any) -> None:
        self._server = wsgi.Server((host, port), app, numthreads=WORKER_THREADS, timeout=int(REQUEST_TIMEOUT_S),
                                   server_name="hemex")
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound TCP port."""
        return int(self._server.bind_addr[1])  # type: ignore[index]

    def start(self) -> None:
        """Bind, then serve in a daemon thread.

        Raises
        ------
        OSError
            The address cannot be bound (in use, not this host's).
        """
        self._server.prepare()  # binds: an error is raised here, in the caller's thread
        self._thread = threading.Thread(target=self._server.serve, name="http", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop accepting, finish the requests in progress, close the socket."""
        if self._thread is None:
            return
        self._server.stop()
        self._thread.join(timeout=REQUEST_TIMEOUT_S)
        self._thread = None


def start_web_server(host: str, port: int, app: Any) -> WebServer | None:
    """The running server, or None when its address cannot be bound.

    A port that cannot be bound is logged as an error and the node runs on without its
    HTTP server: monitoring and the console must never keep CT from being received, and
    the scraper sees the target down.
    """
    server = WebServer(host, port, app)
    try:
        server.start()
    except OSError as exc:
        log.error("http server not started host=%s port=%d reason=%s (no /metrics, /healthz or console)",
                  host, port, exc.strerror or str(exc))
        return None
    log.info("http server host=%s port=%d", host, server.port)
    return server
