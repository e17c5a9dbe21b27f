"""What a search costs beyond its trials: a fixed-cost trainable run through the project's
real ``orchestrator.tuner.run_search`` (Ray Tune, Optuna TPE, the driver's MLflow callback on
a temporary sqlite store, checkpoints to a temporary storage folder, live table off), against
the same trainable called sequentially in this process without Ray.

    python bench/search_overhead.py                    # 40 trials x 2 epochs x 1.0 s, 2 at a time
    python bench/search_overhead.py --no-reuse-actors  # the same with a fresh process per trial
    python bench/search_overhead.py --spin --asha      # busy-wait epochs; ASHA stopping trials
    python bench/search_overhead.py --per-report       # 8 trials x 50 free epochs: cost per report
    python bench/search_overhead.py --per-report --compare-writes  # against orch's old writes

Each epoch of a trial waits a fixed ``--epoch-s`` (sleeping, or spinning with ``--spin``) and
then reports one metric with a tiny checkpoint, so every trial costs the same and everything
else is orchestration: actor start-up, Optuna, scheduling, result and checkpoint handling,
MLflow writes. ASHA is off by default so that all trials run all epochs (the cost per trial
stays fixed); ``--asha`` turns it on. Ray is started before the clock starts and its start-up
is printed apart.

Printed (c = concurrency, N = trials, W = search wall time, S = summed trial time as Ray
measured it, ``time_total_s`` of each trial's last result, B = in-process baseline total):

- the issue's literal ratio (W - S) / W: it ignores that c trials run at once, so with c > 1
  it goes negative whenever the slots are kept busy;
- the concurrency-adjusted ratio (W - S/c) / W: the share of the wall time the c slots were
  not running trial code;
- overhead per trial (c*W - S) / N: slot-seconds each trial costs beyond its own run;
- against the baseline: W / (B/c), the slowdown against a perfect c-way split of the pure
  trial cost, and (c*W - B) / N, the per-trial overhead measured that way;
- per report (R = epochs reported): (c*W - B) / R, the slot-seconds one ``tune.report``
  costs (the driver's result handling, scheduler, searcher, MLflow metrics write). It is
  what a replayed search (``bench/search_efficiency.py``, epochs that cost nothing) pays per
  epoch; ``--per-report`` measures it alone: 8 trials of 50 free epochs (``--epoch-s 0``),
  without checkpoints (``--no-checkpoints``, as a replay) and with the MLflow store and
  Tune's storage on tmpfs (``--tmpfs``). W / R is the same seen as the search's wall time:
  with reports that cost nothing, the driver handles one report after another.

``--compare-writes`` runs the search first as orch wrote results before (every result its
own MLflow commit: ``FLUSH_S = 0``; Tune's TensorBoard logger on) and then as it writes them
now (results within ``mlflow_callback.FLUSH_S`` of the last write batched, no TensorBoard
files), same seed and trials, and prints W / R of both and their ratio.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from orchestrator.resources import connect_ray  # noqa: E402
from orchestrator.settings import SearchSettings  # noqa: E402
from orchestrator.tuner import run_search  # noqa: E402


def space(trial) -> dict:
    """Two sampled knobs for TPE; constants say how long an epoch is."""
    trial.suggest_float("x", -2.0, 2.0)
    trial.suggest_int("k", 1, 8)
    return {}


def score(config: dict, epoch: int) -> float:
    return -((config["x"] - 0.5) ** 2) - 0.01 * config["k"] + 0.1 * epoch


def wait(seconds: float, spin: bool) -> None:
    """A fixed cost: sleeping (orchestration alone competes for the CPUs) or spinning."""
    if not spin:
        time.sleep(seconds)
        return
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def trial_body(config: dict, report) -> None:
    """The whole trial: per epoch, the fixed cost, then a metric and a tiny checkpoint."""
    for epoch in range(1, config["epochs"] + 1):
        wait(config["epoch_s"], config["spin"])
        if not config.get("checkpoints", True):
            report({"score": score(config, epoch), "epoch": epoch}, None)
            continue
        with tempfile.TemporaryDirectory(prefix="bench-ckpt-") as folder:
            (Path(folder) / "state.json").write_text(json.dumps({"epoch": epoch, **config}))
            report({"score": score(config, epoch), "epoch": epoch}, folder)


def ray_trial(config: dict) -> None:
    """The Ray Tune function trainable around ``trial_body``."""
    from ray import tune

    def report(metrics: dict, folder: str | None) -> None:
        checkpoint = tune.Checkpoint.from_directory(folder) if folder else None
        tune.report(metrics, checkpoint=checkpoint)

    trial_body(config, report)


def baseline(trials: int, constants: dict) -> float:
    """Seconds for ``trials`` trials called one after another in this process, no Ray."""
    started = time.perf_counter()
    for i in range(trials):
        config = {"x": -2.0 + 4.0 * i / max(1, trials - 1), "k": 1 + i % 8, **constants}
        trial_body(config, lambda metrics, folder: None)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--epoch-s", type=float, default=1.0, help="Fixed cost of one epoch.")
    parser.add_argument("--concurrency", type=int, default=2, help="Trials at once (CPUs).")
    parser.add_argument("--spin", action="store_true", help="Busy-wait instead of sleeping.")
    parser.add_argument("--asha", action="store_true", help="ASHA on (default: off).")
    parser.add_argument(
        "--reuse-actors",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Tune's actor reuse (orch's default: on).",
    )
    parser.add_argument("--baseline-trials", type=int, default=None, help="Default: --trials.")
    parser.add_argument(
        "--checkpoints", action=argparse.BooleanOptionalAction, default=True,
        help="A tiny checkpoint with every report (default: on).",
    )  # fmt: skip
    parser.add_argument("--tmpfs", action="store_true", help="MLflow and Tune on /dev/shm.")
    parser.add_argument(
        "--compare-writes", action="store_true",
        help="First as orch wrote results before (each its own commit, TensorBoard on).",
    )  # fmt: skip
    parser.add_argument(
        "--per-report", action="store_true",
        help="8 trials x 50 free epochs, no checkpoints, tmpfs: the cost of one report.",
    )  # fmt: skip
    args = parser.parse_args()
    if args.per_report:
        args.trials, args.epochs, args.epoch_s = 8, 50, 0.0
        args.checkpoints, args.tmpfs = False, True
    c, n = args.concurrency, args.trials
    constants = {
        "epochs": args.epochs, "epoch_s": args.epoch_s, "spin": args.spin,
        "checkpoints": args.checkpoints,
    }  # fmt: skip

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    logging.getLogger("mlflow").setLevel(logging.WARNING)  # store creation notices
    load = os.getloadavg()
    started = time.perf_counter()
    connect_ray(num_cpus=c)
    ray_start = time.perf_counter() - started

    shm = "/dev/shm" if args.tmpfs and Path("/dev/shm").is_dir() else None
    before = None
    if args.compare_writes:  # a first, small search pays the imports for both
        timed_search(argparse.Namespace(**{**vars(args), "trials": 2}), constants, shm, "now")
        before = timed_search(args, constants, shm, writes="before")
    wall, result = timed_search(args, constants, shm, writes="now")
    errors = [r for r in result.results if r.error]
    summed = sum(r.metrics.get("time_total_s", 0.0) for r in result.results)
    epochs_run = sum(r.metrics.get("training_iteration", 0) for r in result.results)

    m = args.baseline_trials or n
    base = baseline(m, constants) * n / m  # scaled to N trials when fewer were run
    report_rows(args, shm, load, ray_start, wall, summed, base, epochs_run, errors, m)
    if before is not None:
        old_wall, old = before
        old_epochs = sum(r.metrics.get("training_iteration", 0) for r in old.results)
        old_per, new_per = old_wall / max(1, old_epochs), wall / max(1, epochs_run)
        print(f"{'W / R, writes as before (each result a commit, TBX):':<52}{old_per:9.3f} s")
        print(f"{'W / R, writes now (batched within FLUSH_S, no TBX):':<52}{new_per:9.3f} s")
        print(f"{'before / now':<52}{old_per / new_per:9.2f} x")


def timed_search(args, constants: dict, shm: str | None, writes: str):
    """One search; (wall seconds, SearchResult). ``writes="before"``: every result its own
    MLflow commit and Tune's TensorBoard logger on, as orch wrote them before."""
    import orchestrator.tracking.callback as mlflow_callback

    flush_s, auto = mlflow_callback.FLUSH_S, os.environ.get("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS")
    if writes == "before":
        mlflow_callback.FLUSH_S = 0.0
        os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "0"
    try:
        with tempfile.TemporaryDirectory(prefix="orch-bench-", dir=shm) as tmp:
            settings = search_settings(args, constants, Path(tmp))
            started = time.perf_counter()
            result = run_search(ray_trial, settings)
            return time.perf_counter() - started, result
    finally:
        mlflow_callback.FLUSH_S = flush_s
        if auto is None:
            os.environ.pop("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", None)
        else:
            os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = auto


def search_settings(args, constants: dict, tmp: Path) -> SearchSettings:
    c, n = args.concurrency, args.trials
    return SearchSettings(
        space=space,
        metric="score",
        mode="max",
        trials=n,
        sampler="tpe",
        seed=0,
        scheduler="asha" if args.asha else "none",
        epochs=args.epochs,
        max_concurrent=c,
        cpus_per_trial=1.0,
        storage=str(tmp / "ray"),
        name="bench",
        tracking_uri=f"sqlite:///{tmp / 'mlruns' / 'mlflow.db'}",
        constants=constants,
        reuse_actors=args.reuse_actors,
        live=False,
    )


def report_rows(args, shm, load, ray_start, wall, summed, base, epochs_run, errors, m) -> None:
    c, n = args.concurrency, args.trials
    print(
        f"search: {n} trials x {args.epochs} epochs x {args.epoch_s:g} s "
        f"({'spin' if args.spin else 'sleep'}), {c} at a time, ASHA {'on' if args.asha else 'off'}, "
        f"reuse_actors {'on' if args.reuse_actors else 'off'}, TPE, MLflow sqlite"
        f"{' on tmpfs' if shm else ''}, checkpoints {'on' if args.checkpoints else 'off'}; "
        f"{epochs_run} epochs run, {len(errors)} failed trials"
    )
    print(
        f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs"
    )
    rows = [
        ("Ray start (not counted below)", ray_start, "s"),
        ("search wall time W", wall, "s"),
        ("summed trial time S (Ray's time_total_s)", summed, "s"),
        (f"in-process baseline B ({m} trials, no Ray)", base, "s"),
        ("literal (W - S) / W, ignores concurrency", (wall - summed) / wall, ""),
        (f"concurrency-adjusted (W - S/{c}) / W", (wall - summed / c) / wall, ""),
        ("overhead per trial (c*W - S) / N", (c * wall - summed) / n, "s"),
        (f"W / (B/{c}), slowdown vs a perfect {c}-way split", wall / (base / c), "x"),
        ("overhead per trial vs baseline (c*W - B) / N", (c * wall - base) / n, "s"),
        ("per report vs baseline (c*W - B) / R", (c * wall - base) / max(1, epochs_run), "s"),
        ("search wall time per report W / R", wall / max(1, epochs_run), "s"),
    ]
    for label, value, unit in rows:
        print(f"{label + ':':<52}{value:9.3f} {unit}")


if __name__ == "__main__":
    main()
