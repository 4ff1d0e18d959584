"""Serving the console: waitress (a production WSGI server, pure Python) in the foreground.

`ConsoleServer` runs it in a background thread of this process (the tests); `serve` in
the foreground until SIGTERM or Ctrl-C (`refund-bots console`, the systemd unit).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType, TracebackType

from waitress.server import create_server

from bots.config import Settings
from bots.console.app import create_app
from bots.queue import safe_url

READY_PREFIX = "Console: "


class ConsoleServer:
    """The console on a free (or given) port, served by waitress in a thread."""

    def __init__(self, settings: Settings, *, host: str | None = None, port: int | None = None,
                 secret_key: str | None = None) -> None:
        app = create_app(settings, secret_key=secret_key)
        self.server = create_server(app, host=host or settings.console.host,
                                    port=settings.console.port if port is None else port,
                                    threads=settings.console.threads, ident="refund-bots")
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.server.effective_host, self.server.effective_port
        return f"http://{host}:{port}"

    def start(self) -> ConsoleServer:
        self.thread = threading.Thread(target=self.server.run, daemon=True, name="console")
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.close()
        if self.thread is not None:
            self.thread.join(timeout=10)

    def __enter__(self) -> ConsoleServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def serve(settings: Settings, *, host: str | None, port: int | None,
          say: Callable[[str], None]) -> None:
    """Serve until SIGTERM or Ctrl-C; says where (the line the tests and systemd wait for)."""
    server = ConsoleServer(settings, host=host, port=port)
    stop = threading.Event()

    def handler(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    server.start()
    say(f"{READY_PREFIX}{server.url} (queue {safe_url(settings.queue_url)}); "
        "stop with Ctrl-C")
    stop.wait()
    server.stop()
