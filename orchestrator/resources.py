"""Ray start/connect and what one trial asks of the cluster.

A trial gets one GPU's worth of memory budget (default 11 GB, the paper's card). On a larger
card it asks Ray for the matching fraction of a GPU, ``1 / floor(card / budget)``, so that
several trials share the card, and caps itself inside the trial with
``torch.cuda.set_per_process_memory_fraction`` (``trainable.tune_trainable.cap_gpu_memory``).
"""

from __future__ import annotations

import math
import os
import socket
from urllib.parse import urlsplit

PROBE_TIMEOUT_S = 3.0
START_HINT = "start one with 'ray start --head' or drop --address"
AUTH_HINT = (
    "if the cluster uses token authentication, set RAY_AUTH_MODE=token and its token in "
    "RAY_AUTH_TOKEN or ~/.ray/auth_token"
)


def _answers(host: str, port: int, timeout_s: float) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def check_ray_address(address: str | None, timeout_s: float = PROBE_TIMEOUT_S) -> None:
    """Raise ConnectionError (one line) unless a Ray cluster's GCS port accepts a TCP
    connection at ``address`` ('auto', host:port or ray://host:port) within ``timeout_s``.

    ``ray.init(address=...)`` with nothing listening retries for minutes before it gives up;
    this probe turns a typo or a stopped cluster into an error in seconds, before anything
    (MLflow runs, storage folders) is created. 'auto' is resolved the way Ray resolves it
    (RAY_ADDRESS, the cluster 'ray start' last started here, a running GCS process)."""
    if not address or address == "local":
        return
    if address == "auto":
        from ray._private.services import canonicalize_bootstrap_address

        try:
            target = canonicalize_bootstrap_address("auto")
        except ConnectionError:
            raise ConnectionError(
                f"--address auto: no Ray cluster found on this machine ({START_HINT})"
            ) from None
    else:
        target = address
    parts = urlsplit(target if "://" in target else f"//{target}")
    try:
        host, port = parts.hostname, parts.port
    except ValueError:  # a port that is not a number
        host, port = None, None
    if not host or not port:
        raise ValueError(f"--address {address}: expected 'auto' or host:port")
    if not _answers(host, port, timeout_s):
        where = "there" if target == address else f"at {target}"
        raise ConnectionError(f"--address {address}: no Ray cluster answers {where} ({START_HINT})")


def connect_ray(
    address: str | None = None,
    num_cpus: int | None = None,
    num_gpus: int | None = None,
    log_to_driver: bool = False,
) -> None:
    """Join the cluster at ``address`` (``auto`` or ``host:port``), or start a local Ray bound
    to 127.0.0.1 without a dashboard. Worker output stays in the trial logs by default so
    that it does not tear the live table (``log_to_driver``)."""
    import ray

    from orchestrator.driver import ray_logging_level

    if ray.is_initialized():
        return
    if address:
        try:
            ray.init(
                address=address, log_to_driver=log_to_driver, logging_level=ray_logging_level()
            )
        except ConnectionError as error:
            # Ray enables token auth by itself only for a cluster it finds ('auto'), never for
            # an explicit address; a missing token then reads as a plain connection failure.
            if os.environ.get("RAY_AUTH_MODE", "").lower() == "token" or address == "auto":
                raise
            first = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise ConnectionError(f"{first}; {AUTH_HINT}") from error
        return
    ray.init(
        num_cpus=num_cpus,
        num_gpus=num_gpus,
        include_dashboard=False,
        log_to_driver=log_to_driver,
        logging_level=ray_logging_level(),
        _node_ip_address="127.0.0.1",
    )


def cluster_gpus() -> float:
    """GPUs Ray sees in the cluster (0 when none)."""
    import ray

    return float(ray.cluster_resources().get("GPU", 0.0))


def probe_gpu_memory_gb(timeout_s: float = 60.0) -> float | None:
    """Memory of one of the cluster's GPUs, read by a tiny task on a GPU node (the driver
    may have none); None when there is no GPU or the probe does not answer in time."""
    import ray

    if cluster_gpus() <= 0:
        return None

    @ray.remote(num_gpus=0.01, num_cpus=0)
    def total_gb() -> float:
        import torch

        return torch.cuda.get_device_properties(0).total_memory / 2**30

    try:
        return float(ray.get(total_gb.remote(), timeout=timeout_s))
    except Exception:
        return None


CUDA_CONTEXT_GB = 0.5
"""Memory each process's CUDA context takes outside PyTorch's allocator (kernels, cuBLAS and
cuDNN handles: ~0.3-0.6 GB, depending on the card and CUDA version); a trial's budget caps only
the allocator (``set_per_process_memory_fraction``), so the context comes on top of it."""


def gpu_share(
    gpu_memory_gb: float, card_gb: float | None, context_gb: float = CUDA_CONTEXT_GB
) -> float:
    """Fraction of one GPU a trial with budget ``gpu_memory_gb`` asks for on a ``card_gb`` card.

    ``1 / n`` with n the number of trials whose budget plus CUDA context (``context_gb`` each)
    fit the card: a whole number of trials per card, so Ray never packs more than fit. A card
    that holds at most one takes a whole GPU; an unknown card size is treated the same way."""
    if gpu_memory_gb <= 0:
        raise ValueError(f"--gpu-memory-gb must be > 0, got {gpu_memory_gb}")
    if context_gb < 0:
        raise ValueError(f"CUDA context size must be >= 0 GB, got {context_gb}")
    if not card_gb:
        return 1.0
    return 1.0 / max(1, math.floor(card_gb / (gpu_memory_gb + context_gb)))
