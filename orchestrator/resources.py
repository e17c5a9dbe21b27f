"""Ray start/connect and what one trial asks of the cluster.

A trial gets one GPU's worth of memory budget (default 11 GB, the paper's card). On a larger
card it asks Ray for the matching fraction of a GPU, ``1 / floor(card / budget)``, so that
several trials share the card, and caps itself inside the trial with
``torch.cuda.set_per_process_memory_fraction`` (``trainable.tune_trainable.cap_gpu_memory``).
"""

from __future__ import annotations

import math

DEFAULT_GPU_MEMORY_GB = 11.0


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

    if ray.is_initialized():
        return
    if address:
        ray.init(address=address, log_to_driver=log_to_driver)
        return
    ray.init(
        num_cpus=num_cpus,
        num_gpus=num_gpus,
        include_dashboard=False,
        log_to_driver=log_to_driver,
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


def gpu_share(gpu_memory_gb: float, card_gb: float | None) -> float:
    """Fraction of one GPU a trial with budget ``gpu_memory_gb`` asks for on a ``card_gb`` card.

    ``1 / n`` with n the number of budgets that fit the card: a whole number of trials per
    card, so Ray never packs more than fit. A budget at least the card's size takes a whole
    GPU; an unknown card size is treated the same way."""
    if gpu_memory_gb <= 0:
        raise ValueError(f"--gpu-memory-gb must be > 0, got {gpu_memory_gb}")
    if not card_gb or gpu_memory_gb >= card_gb:
        return 1.0
    return 1.0 / math.floor(card_gb / gpu_memory_gb)


def trial_resources(
    cpus_per_trial: float = 1.0,
    gpu_memory_gb: float | None = DEFAULT_GPU_MEMORY_GB,
    gpus_available: float = 0.0,
    card_gb: float | None = None,
) -> dict[str, float]:
    """``{"cpu": c, "gpu": g}`` for ``tune.with_resources``: a GPU share when GPUs exist,
    CPU only otherwise."""
    if cpus_per_trial <= 0:
        raise ValueError(f"--cpus-per-trial must be > 0, got {cpus_per_trial}")
    if gpus_available <= 0:
        return {"cpu": float(cpus_per_trial), "gpu": 0.0}
    share = gpu_share(gpu_memory_gb or DEFAULT_GPU_MEMORY_GB, card_gb)
    return {"cpu": float(cpus_per_trial), "gpu": share}
