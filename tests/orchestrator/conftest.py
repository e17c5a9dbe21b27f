"""A small real local Ray for the search tests: 2 CPUs, 127.0.0.1, no dashboard."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def ray_local():
    """Started once for every module that asks for it (a start costs seconds): their searches
    end before the next module's begin, and a fault test kills only a trial's worker, which
    Ray replaces. Bad-input rows trip on ``ray.init`` whether or not this Ray is up
    (test_bad_input.py's ``ray_calls``)."""
    import ray

    # Ray's new output engine prints a banner even at verbose=0 (see orchestrator.tuner).
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        _node_ip_address="127.0.0.1",
    )
    try:
        yield ray
    finally:
        ray.shutdown()
