"""Services that do not answer: `orch search` / `orch best` fail with one line from a short
probe, instead of the minutes Ray's and MLflow's own clients spend retrying.

A closed port stands for a stopped Ray cluster or MLflow server. Each failing search must
leave nothing behind: no MLflow store or run, no Ray storage folder, no Ray session. The
subprocess timeouts below are hang guards (a client retrying for minutes), not speed claims.
"""

from __future__ import annotations

import http.server
import socket
import threading

import pytest

from orchestrator.resources import check_ray_address
from orchestrator.tracking.store import check_tracking_uri
from tests.orchestrator.processes import free_port, orch

HANG_GUARD_S = 120  # a stuck command fails here; generous for a busy machine, not a speed claim


def search(tmp_path, *args, env=None):
    return orch(
        "search", "--dataset", "synthetic", "--quick", "--trials", 1,
        "--storage", tmp_path / "ray", *args,
        cwd=tmp_path, env=env, timeout=HANG_GUARD_S,
    )  # fmt: skip


def assert_one_line_and_nothing_left(done, tmp_path, expected: str):
    assert done.returncode == 1, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr[-2000:]
    assert expected in lines[0]
    # No MLflow store (./mlruns), no Ray storage folder: nothing but what the test made.
    assert {p.name for p in tmp_path.iterdir()} <= {"raytmp"}


@pytest.mark.timeout(HANG_GUARD_S + 30)
def test_search_with_no_ray_cluster_at_address(tmp_path):
    address = f"127.0.0.1:{free_port()}"
    done = search(tmp_path, "--address", address)
    # Only the probe words it so; ray.init would have retried, then said something else.
    assert_one_line_and_nothing_left(
        done, tmp_path, f"--address {address}: no Ray cluster answers there"
    )


@pytest.mark.timeout(HANG_GUARD_S + 30)
def test_search_with_address_auto_and_no_cluster(tmp_path):
    from ray._private.services import find_gcs_addresses

    if find_gcs_addresses():  # 'auto' would rightly join that one
        pytest.skip("another Ray cluster runs on this machine")
    # Ray's temp root (where `ray start` notes the current cluster) in an empty folder.
    (tmp_path / "raytmp").mkdir()
    env = {"RAY_TMPDIR": str(tmp_path / "raytmp"), "RAY_ADDRESS": ""}
    done = search(tmp_path, "--address", "auto", env=env)
    assert_one_line_and_nothing_left(
        done, tmp_path, "--address auto: no Ray cluster found on this machine"
    )
    assert not any((tmp_path / "raytmp").iterdir())


@pytest.mark.timeout(HANG_GUARD_S + 30)
def test_search_with_no_mlflow_server_at_tracking_uri(tmp_path):
    uri = f"http://127.0.0.1:{free_port()}"
    done = search(tmp_path, "--tracking-uri", uri)
    # "within 3 s": the probe's single request answered, not MLflow's retrying client.
    assert_one_line_and_nothing_left(
        done, tmp_path, f"--tracking-uri {uri}: no MLflow server answers there within 3 s"
    )


@pytest.mark.timeout(HANG_GUARD_S + 30)
def test_best_with_no_mlflow_server_at_tracking_uri(tmp_path):
    uri = f"http://127.0.0.1:{free_port()}"
    done = orch("best", "--tracking-uri", uri, cwd=tmp_path, timeout=HANG_GUARD_S)
    assert_one_line_and_nothing_left(done, tmp_path, "no MLflow server answers there within 3 s")


@pytest.mark.parametrize("address", ["nohost", "127.0.0.1:notaport", "127.0.0.1:"])
def test_address_that_is_not_host_port_is_rejected(address):
    with pytest.raises(ValueError, match="expected 'auto' or host:port"):
        check_ray_address(address)


@pytest.mark.timeout(30)
def test_ray_probe_is_one_connect_bounded_by_its_timeout(monkeypatch):
    """One TCP connect with the caller's timeout: what keeps a silent host from hanging."""
    calls = []
    real = socket.create_connection

    def spy(address, timeout=None, *args, **kwargs):
        calls.append((address, timeout))
        return real(address, timeout, *args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", spy)
    port = free_port()
    with pytest.raises(ConnectionError, match="no Ray cluster answers there"):
        check_ray_address(f"127.0.0.1:{port}", timeout_s=1.5)
    assert calls == [(("127.0.0.1", port), 1.5)]


def test_a_web_server_that_is_not_mlflow_is_named():
    class NotFound(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's naming
            self.send_error(404)

        def log_message(self, *args):  # keep the test output clean
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), NotFound)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        uri = f"http://127.0.0.1:{server.server_port}"
        with pytest.raises(ConnectionError, match="HTTP 404 from MLflow's REST API"):
            check_tracking_uri(uri)
    finally:
        server.shutdown()
        server.server_close()
