"""Fixtures of the tracking tests: an `mlflow server` that can be stopped and started again."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.orchestrator.processes import BIN, free_port, healthy, start_group, stop_group, wait_for


class Server:
    """An `mlflow server` that can be stopped and started again on the same port and store."""

    def __init__(self, root: Path):
        self.root, self.port = root, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = None
        self.starts = 0

    def start(self) -> None:
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        env.pop("MLFLOW_TRACKING_URI", None)
        self.starts += 1
        log = self.root / f"server-{self.starts}.log"
        self.proc = start_group(
            [
                str(BIN / "mlflow"), "server",
                "--backend-store-uri", f"sqlite:///{self.root / 'srv.db'}",
                "--artifacts-destination", str(self.root / "artifacts"),
                "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
            ],
            log,
            env,
        )  # fmt: skip
        wait_for(lambda: healthy(self.url), 90, "mlflow server", log)

    def stop(self) -> None:
        if self.proc is not None:
            assert stop_group(self.proc) == [], "mlflow server processes left behind"
            self.proc = None


@pytest.fixture
def server(tmp_path):
    srv = Server(tmp_path / "server")
    srv.root.mkdir()
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()
