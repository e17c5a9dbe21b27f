"""Does orch hold at 1,000 trials? The driver's cost per trial, hundred by hundred.

    python bench/search_scale.py                       # 1,000 trials, 16 at a time, 10 ms each
    python bench/search_scale.py --trials 200 --json out.json

A trial is ``bench/search_overhead.py``'s fixed-cost trainable (one 10 ms epoch and a tiny
checkpoint per report; 2 epochs by default) run through the real ``run_search``: Ray Tune
with fractional CPUs (16 trials on this machine's cores), Optuna, the MLflow callback on a
sqlite store and the live table drawing into a null console. Trials cost nothing, so the
wall time is the driver's: everything orch and the libraries under it do per trial.

With ``--baseline`` the same trials run first through bare Ray Tune in the same process with
the Tune settings orch uses (actor reuse, Tune's JSON and CSV loggers, no TensorBoard files,
its legacy quiet output), random search and ASHA, and none of orch's parts (Optuna, the MLflow
callback, the live table, the checkpoint janitor): the difference per trial is what orch adds
(goal: at most 0.2 s at 1,000 trials). Tune as ten lines would write it (TensorBoard logger
on) is slower than both; ``--baseline-defaults`` runs that instead.

Printed and saved (``--json``): per hundred trials (in the order they ended) the wall seconds
per trial, and the last hundred against the first (goal: within 20 %); the driver's peak
resident memory (``ru_maxrss``) and Python's peak allocations in the driver (tracemalloc);
the sqlite store's size; how long ``orch best`` and ``orch ui`` (until its links print) take
on that store; and the machine's load before the run, since the box may be shared.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ray.tune import Callback  # noqa: E402

from bench.search_overhead import space  # noqa: E402
from orchestrator.resources import connect_ray  # noqa: E402
from orchestrator.settings import SearchSettings  # noqa: E402
from orchestrator.tuner import run_search  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


class EndTimes(Callback):
    """A Tune callback noting when each trial ended (driver clock)."""

    def __init__(self):
        self.ends: list[float] = []

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.ends.append(time.perf_counter())

    def on_trial_error(self, iteration, trials, trial, **info):
        self.ends.append(time.perf_counter())


def scale_trial(config: dict) -> None:
    """Per epoch: ``epoch_s`` of sleep, then a metric and a tiny checkpoint, like a real trial
    (defined here, so Ray ships it by value to its workers)."""
    from ray import tune

    for epoch in range(1, config["epochs"] + 1):
        time.sleep(config["epoch_s"])
        score = -((config["x"] - 0.5) ** 2) - 0.01 * config["k"] + 0.1 * epoch
        with tempfile.TemporaryDirectory(prefix="scale-ckpt-") as folder:
            (Path(folder) / "state.json").write_text(json.dumps({"epoch": epoch}))
            tune.report({"score": score}, checkpoint=tune.Checkpoint.from_directory(folder))


def bare_tune(args, cpus: int, storage: Path) -> tuple[float, float, list[float]]:
    """The same trials through plain Ray Tune: (start, wall seconds, trial end times)."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    from orchestrator.driver import quiet_driver
    from orchestrator.tuner import missing_loggers

    ends = EndTimes()
    callbacks = [ends] if args.baseline_defaults else [ends, *missing_loggers([])]
    tuner = tune.Tuner(
        tune.with_resources(scale_trial, {"cpu": cpus / args.concurrency}),
        param_space={
            "x": tune.uniform(-2.0, 2.0),
            "k": tune.randint(1, 9),
            "epochs": args.epochs,
            "epoch_s": args.epoch_s,
        },  # fmt: skip
        tune_config=tune.TuneConfig(
            metric="score",
            mode="max",
            num_samples=args.trials,
            max_concurrent_trials=args.concurrency,
            reuse_actors=True,
            scheduler=ASHAScheduler(max_t=args.epochs, grace_period=1),
        ),  # fmt: skip
        run_config=tune.RunConfig(
            name="bare", storage_path=str(storage), verbose=0, callbacks=callbacks
        ),
    )
    start = time.perf_counter()
    if args.baseline_defaults:
        tuner.fit()
    else:
        with quiet_driver(live=False):
            tuner.fit()
    return start, time.perf_counter() - start, ends.ends


def per_hundred(start: float, ends: list[float], size: int = 100) -> list[float]:
    """Wall seconds per trial within each block of ``size`` trials (by end time)."""
    ends = sorted(ends)
    out, previous = [], start
    for i in range(size - 1, len(ends), size):
        out.append((ends[i] - previous) / size)
        previous = ends[i]
    return out


def timed(command: list[str], env: dict, until: str | None = None, timeout: float = 120.0):
    """Seconds until ``command`` exits (or prints ``until`` on stdout, then it is stopped)."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        if until is None:
            proc.communicate(timeout=timeout)
            return time.perf_counter() - started, proc.returncode
        deadline = started + timeout
        for line in proc.stdout:
            if until in line:
                return time.perf_counter() - started, 0
            if time.perf_counter() > deadline:
                break
        return float("nan"), proc.poll()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--epoch-s", type=float, default=0.01)
    parser.add_argument("--json", default=None, help="Also save the numbers here.")
    parser.add_argument(
        "--baseline", action="store_true", help="First run the trials through bare Ray Tune."
    )
    parser.add_argument(
        "--baseline-defaults", action="store_true",
        help="The baseline with Tune's defaults (its TensorBoard logger on).",
    )  # fmt: skip
    parser.add_argument(
        "--keep-store", default=None, help="Copy the search's sqlite store here (to profile)."
    )
    args = parser.parse_args()
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    load = os.getloadavg()
    cpus = os.cpu_count() or 1
    connect_ray(num_cpus=cpus)
    constants = {"epochs": args.epochs, "epoch_s": args.epoch_s}
    with tempfile.TemporaryDirectory(prefix="orch-scale-") as tmp:
        root = Path(tmp)
        bare = None
        if args.baseline or args.baseline_defaults:
            bare_start, bare_wall, bare_ends = bare_tune(args, cpus, root / "bare")
            bare = {
                "wall_s": bare_wall,
                "s_per_trial_per_hundred": per_hundred(bare_start, bare_ends),
            }
            print(f"bare Ray Tune: {bare_wall:.0f} s, s per trial per hundred: "
                  + " ".join(f"{b:.3f}" for b in bare["s_per_trial_per_hundred"]))  # fmt: skip
        uri = f"sqlite:///{root / 'mlruns' / 'mlflow.db'}"
        settings = SearchSettings(
            space=space, metric="score", mode="max", trials=args.trials, sampler="random",
            seed=0, scheduler="asha", epochs=args.epochs, max_concurrent=args.concurrency,
            cpus_per_trial=cpus / args.concurrency, storage=str(root / "ray"), name="scale",
            tracking_uri=uri, constants=constants, live=True,
        )  # fmt: skip
        from rich.console import Console

        ends = EndTimes()
        tracemalloc.start()
        start = time.perf_counter()
        result = run_search(
            scale_trial, settings, console=Console(file=io.StringIO()), callbacks=[ends]
        )
        wall = time.perf_counter() - start
        _, python_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        blocks = per_hundred(start, ends.ends)
        store = root / "mlruns" / "mlflow.db"
        if args.keep_store:
            import shutil

            shutil.copy(store, args.keep_store)
        env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
        orch = [sys.executable, "-m", "orchestrator.cli"]
        best_s, best_rc = timed([*orch, "best", "--name", "scale"], env)
        ui_s, _ = timed([*orch, "ui", "--port", str(free_port())], env, until="search")
        out = {
            "trials": args.trials, "concurrency": args.concurrency, "epochs": args.epochs,
            "epoch_s": args.epoch_s, "cpus": cpus, "load_before": load, "wall_s": wall,
            "failed": sum(1 for r in result.results if r.error),
            "s_per_trial_per_hundred": blocks,
            "last_over_first": blocks[-1] / blocks[0] if len(blocks) > 1 else None,
            "driver_peak_rss_mb": rss_mb, "driver_python_peak_mb": python_peak / 2**20,
            "store_mb": store.stat().st_size / 2**20,
            "orch_best_s": best_s, "orch_best_rc": best_rc, "orch_ui_links_s": ui_s,
            "bare_tune": bare,
            "orch_over_bare_s_per_trial": (wall - bare["wall_s"]) / args.trials if bare else None,
            "commit": subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, text=True,
                                     capture_output=True).stdout.strip(),
        }  # fmt: skip
    print(f"{args.trials} trials x {args.epochs} epochs x {args.epoch_s:g} s, "
          f"{args.concurrency} at a time on {cpus} CPUs (load before {load[0]:.2f}): "
          f"{wall:.0f} s, {out['failed']} failed")  # fmt: skip
    print("s per trial, per hundred: " + " ".join(f"{b:.3f}" for b in blocks))
    if out["last_over_first"] is not None:
        print(f"last hundred / first hundred: {out['last_over_first']:.2f}")
    print(
        f"driver peak RSS {rss_mb:.0f} MB (Python allocations {out['driver_python_peak_mb']:.0f} MB)"
    )
    print(f"sqlite store {out['store_mb']:.1f} MB; orch best {best_s:.1f} s (exit {best_rc}); "
          f"orch ui links after {ui_s:.1f} s")  # fmt: skip
    if bare:
        print(f"orch over bare Ray Tune: {out['orch_over_bare_s_per_trial']:.3f} s per trial "
              f"({wall:.0f} s against {bare['wall_s']:.0f} s)")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


if __name__ == "__main__":
    main()
