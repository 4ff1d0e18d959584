"""`refund-bots chaos` refuses a queue it cannot use with a line, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from postgres import free_port
from typer.testing import CliRunner

from bots.cli import app


@pytest.mark.parametrize("url, says", [
    ("sqlite:///q.sqlite", "must be a PostgreSQL URL"),
    ("postgresql+psycopg://nobody@127.0.0.1:{port}/db", "cannot create a database"),
])
def test_a_queue_url_it_cannot_use_is_refused(tmp_path: Path, url: str, says: str) -> None:
    result = CliRunner().invoke(app, ["chaos", "--queue-url", url.format(port=free_port()),
                                      "--folder", str(tmp_path / "chaos")])
    assert result.exit_code == 1 and says in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
