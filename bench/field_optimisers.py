"""The field's own multi-fidelity optimisers on LCBench, run directly: the yardstick (issue 19).

    python bench/field_optimisers.py --suite --json field.json            # 8 LCBench dev tasks
    python bench/field_optimisers.py --benchmark lcbench:3945 --seeds 3 --strategies dehb
    python bench/search_suite.py --from-json suite.json field.json        # one table with orch's

Each strategy runs as its authors ship it, sequentially, with no Ray and no orch: Optuna's
samplers and pruners stepping through a trial's epochs (``optuna-tpe+hyperband``,
``optuna-tpe+sha``, ``optuna-random+median``), and DEHB (``dehb``; fidelity = epochs, eta 3,
in its own virtual environment, as it pins numpy<2). A trial's epochs are the surrogate's
curve of its config (``bench/lcbench.py``: epoch e is the surrogate's e + 1), so a search
sees what an orch search on ``lcbench:TASK`` sees. The budget is search_suite.py's, in the
same units: ``--full-trials`` full trials' worth of trial-epochs, where every epoch a strategy
runs counts (DEHB re-trains a promoted config from scratch: those epochs count again), and
a search stops at the budget exactly (the trial it cuts counts only the epochs it ran).

Each (strategy, task, seed) is one record in search_suite.py's format (final best, the test
balanced accuracy of the config and epoch picked, the best-so-far after each trial-epoch),
so ``search_suite.py --from-json`` merges them with orch's runs. LCBench only: the MELD table
is orch's own replay, not a benchmark these libraries know. A record adds ``library`` (name
and version), ``trial_epochs`` (the epochs of each trial, or of each DEHB evaluation, in
order), ``pruned`` (Optuna) and ``fidelities`` (DEHB: evaluations per rung in epochs).

Settings as the libraries' own: Optuna's Hyperband and SHA pruners min resource 1, factor 3;
MedianPruner(n_warmup_steps=1), which with epochs counted from 1 may prune from epoch 1 once
its 5 startup trials are done. DEHB's rungs are 51 / 3^k epochs, rounded (2, 6, 17, 51): one
Hyperband iteration costs 774 trial-epochs, so 20 full trials see little of its evolution
(its first iteration draws configs at random). DEHB's venv: ``python3 -m venv .venv-dehb &&
.venv-dehb/bin/pip install dehb 'numpy<2' onnxruntime`` (``--dehb-python`` to use another).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# Only numpy and onnxruntime at import: DEHB's venv runs this file too (without Optuna or Ray).
from bench.lcbench import (  # noqa: E402
    DEV_TASKS,
    EPOCHS,
    METRIC,
    TEST_METRIC,
    LCBenchError,
    lcbench_dir,
    surrogate,
)

OPTUNA = {  # name: (sampler, pruner)
    "optuna-tpe+hyperband": ("tpe", "hyperband"),
    "optuna-tpe+sha": ("tpe", "sha"),
    "optuna-random+median": ("random", "median"),
}
STRATEGIES = [*OPTUNA, "dehb"]
DEHB_PYTHON = REPO / ".venv-dehb" / "bin" / "python"
DEHB_INSTALL = "python3 -m venv .venv-dehb && .venv-dehb/bin/pip install dehb 'numpy<2' onnxruntime"
ETA = 3


class Ledger:
    """One search's spend and trace in search_suite.py's units: a row per trial-epoch run, the
    best val accuracy so far after it, and nothing past the budget."""

    def __init__(self, spec: str, strategy: str, seed: int, budget: int, args):
        self.spec, self.strategy, self.seed, self.budget = spec, strategy, seed, budget
        self.task, self.epochs = spec.split(":", 1)[1], args.epochs
        self.folder = str(lcbench_dir(args.lcbench_dir))
        self.model = surrogate(self.folder)
        self.anytime: list[float] = []
        self.trial_epochs: list[int] = []  # epochs each trial (DEHB: each evaluation) ran
        self.best, self.test, self.config, self.at = -math.inf, math.nan, {}, None
        self.started = time.perf_counter()

    @property
    def left(self) -> int:
        return self.budget - len(self.anytime)

    def constants(self) -> dict:
        """What an orch trial's config carries besides the 7 dims (its record's best_config)."""
        return {"lcbench_task": self.task, "lcbench_dir": self.folder, "epochs": self.epochs}

    def trial(self, config: dict, epochs: int, stop: Callable[[int, float], bool] | None = None):
        """Train ``config`` from scratch for ``epochs`` epochs, one trial-epoch each, until
        ``stop(epoch, value)`` says so or the budget ends; the val accuracies it ran."""
        if self.left <= 0:
            return []
        # The whole curve in one batch, as orch's trial computes it (rows round alike).
        curves = self.model.curves(self.task, config, self.epochs)
        ran: list[float] = []
        for epoch in range(1, epochs + 1):
            value = curves[METRIC][epoch - 1]
            if value > self.best:  # strictly: the first to reach a score keeps it, as orch's
                self.best, self.test = value, curves[TEST_METRIC][epoch - 1]
                self.config, self.at = config, epoch
            self.anytime.append(self.best)
            ran.append(value)
            if self.left == 0 or (stop is not None and stop(epoch, value)):
                break
        self.trial_epochs.append(len(ran))
        return ran

    def record(self, library: str, **extra) -> dict:
        return {"benchmark": self.spec, "strategy": self.strategy, "seed": self.seed,
                "concurrency": 1, "budget": self.budget, "best": self.best,
                "picked_test": self.test, "best_config": dict(self.config),
                "best_epoch": self.at, "epochs": len(self.anytime),
                "trials": len(self.trial_epochs), "anytime": self.anytime,
                "wall_s": round(time.perf_counter() - self.started, 1),
                "producer": "bench/field_optimisers.py", "library": library,
                "trial_epochs": self.trial_epochs, **extra}  # fmt: skip


def run_optuna(strategy: str, spec: str, seed: int, budget: int, args) -> dict:
    """Optuna alone: ask a config, report each epoch, stop where the pruner says."""
    import optuna
    from optuna.trial import TrialState

    from bench.lcbench import LCBenchSpace

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler_name, pruner_name = OPTUNA[strategy]
    ledger = Ledger(spec, strategy, seed, budget, args)
    samplers = {"tpe": optuna.samplers.TPESampler, "random": optuna.samplers.RandomSampler}
    pruners = {
        "hyperband": lambda: optuna.pruners.HyperbandPruner(
            min_resource=1, max_resource=ledger.epochs, reduction_factor=ETA
        ),
        "sha": lambda: optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=ETA),
        "median": lambda: optuna.pruners.MedianPruner(n_warmup_steps=1),
    }
    # Hyperband puts a trial in a bracket by a hash of the study's name and the trial number:
    # a fixed name (not Optuna's random one) keeps a seed's search the same from run to run.
    study = optuna.create_study(
        study_name=f"{spec}-{strategy}-s{seed}", direction="maximize",
        sampler=samplers[sampler_name](seed=seed), pruner=pruners[pruner_name](),
    )  # fmt: skip
    space = LCBenchSpace(ledger.task, ledger.folder, ledger.epochs)
    pruned = 0
    while ledger.left > 0:
        trial = study.ask()
        constants = space(trial)  # suggests the 7 dims (define-by-run), as orch's trials
        config = {**trial.params, **constants}
        stopped: list[int] = []

        def stop(epoch: int, value: float, trial=trial, stopped=stopped) -> bool:
            trial.report(value, epoch)
            if trial.should_prune():
                stopped.append(epoch)
            return bool(stopped)

        ran = ledger.trial(config, ledger.epochs, stop)
        if stopped:
            pruned += 1
            study.tell(trial, state=TrialState.PRUNED)
        elif len(ran) == ledger.epochs:
            study.tell(trial, ran[-1])
        # else: the budget cut it, and it was the last trial
    return ledger.record(f"optuna {optuna.__version__}", pruned=pruned)


def run_dehb(spec: str, seed: int, budget: int, args, output: Path) -> dict:
    """DEHB's ask/tell loop (in DEHB's venv): each ask trains a config from scratch at its
    fidelity (epochs, rounded) and tells -val accuracy at that epoch and the epochs run."""
    from importlib.metadata import version

    import ConfigSpace as CS
    from dehb import DEHB

    ledger = Ledger(spec, "dehb", seed, budget, args)
    space = CS.ConfigurationSpace(seed=seed)
    for name, dim in ledger.model.space.items():
        kind = CS.UniformIntegerHyperparameter if dim["type"] == "uniform_int" else None
        kind = kind or CS.UniformFloatHyperparameter
        space.add(kind(name, dim["lower"], dim["upper"], log=bool(dim.get("log"))))
    # save_freq "end": no history written at each new incumbent (ask/tell never reaches "end").
    optimiser = DEHB(
        cs=space, dimensions=len(ledger.model.space), min_fidelity=1, max_fidelity=ledger.epochs,
        eta=ETA, n_workers=1, output_path=str(output), seed=seed, save_freq="end",
    )  # fmt: skip
    fidelities: dict[int, int] = {}
    while ledger.left > 0:
        job = optimiser.ask()
        drawn = dict(job["config"])  # a ConfigSpace Configuration
        # ConfigSpace hands numpy scalars; plain numbers, as Optuna's, for the JSON record.
        config = {name: int(drawn[name]) if dim["type"] == "uniform_int" else float(drawn[name])
                  for name, dim in ledger.model.space.items()} | ledger.constants()  # fmt: skip
        epochs = max(1, round(job["fidelity"]))  # DEHB's rungs are 51/3^k: 1.9, 5.7, 17, 51
        fidelities[epochs] = fidelities.get(epochs, 0) + 1
        ran = ledger.trial(config, epochs)
        if len(ran) == epochs:
            optimiser.tell(job, {"fitness": -ran[-1], "cost": len(ran)})
    return ledger.record(f"dehb {version('dehb')}", fidelities=fidelities)


def dehb_child(args) -> None:
    """The DEHB side, in DEHB's venv: its records as a JSON list in ``args.dehb_child``."""
    runs = []
    with tempfile.TemporaryDirectory(prefix="orch-dehb-") as tmp:
        for spec in args.benchmark:
            for seed in range(args.first_seed, args.first_seed + args.seeds):
                out = Path(tmp) / f"{spec.replace(':', '-')}-s{seed}"
                runs.append(run_dehb(spec, seed, args.budget, args, out))
                progress(runs[-1])
    Path(args.dehb_child).write_text(json.dumps(runs))


def run_dehb_parent(spec: str, budget: int, args) -> list[dict]:
    """DEHB's records for ``spec``, from this file run again under ``--dehb-python``."""
    with tempfile.TemporaryDirectory(prefix="orch-dehb-") as tmp:
        out = Path(tmp) / "runs.json"
        command = [str(args.dehb_python), __file__, "--dehb-child", str(out), "--benchmark",
                   spec, "--seeds", str(args.seeds), "--first-seed", str(args.first_seed),
                   "--budget", str(budget), "--epochs", str(args.epochs)]  # fmt: skip
        if args.lcbench_dir:
            command += ["--lcbench-dir", str(args.lcbench_dir)]
        # DEHB's logger writes to stdout: that goes to stderr here, with the progress lines.
        done = subprocess.run(command, cwd=REPO, stdout=sys.stderr)
        if done.returncode != 0 or not out.is_file():
            raise SystemExit(
                f"error: dehb under {args.dehb_python} failed (exit {done.returncode})"
            )
        return json.loads(out.read_text())


def progress(run: dict) -> None:
    print(f"{run['benchmark']} {run['strategy']} seed {run['seed']}: best {run['best']:.3f} "
          f"({run['trials']} trials, {run['wall_s']:.0f} s)", file=sys.stderr, flush=True)  # fmt: skip


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--benchmark", nargs="+", default=None, help="lcbench:TASK ...")
    parser.add_argument("--suite", action="store_true", help="The 8 LCBench dev tasks.")
    parser.add_argument("--strategies", nargs="+", default=STRATEGIES)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--full-trials", type=int, default=None,
                        help="Budget per search in full trials' worth of trial-epochs "
                             "(default: search_suite.py's).")  # fmt: skip
    parser.add_argument("--epochs", type=int, default=EPOCHS,
                        help="LCBench epochs per trial (default 51; fewer for a smoke).")  # fmt: skip
    parser.add_argument("--reference", default="optuna-random+median",
                        help="The strategy to reach, in the printed table.")  # fmt: skip
    parser.add_argument("--lcbench-dir", default=None, help="Default ../shared/bench/lcbench.")
    parser.add_argument("--dehb-python", type=Path, default=DEHB_PYTHON,
                        help="The python of DEHB's venv (it pins numpy<2).")  # fmt: skip
    parser.add_argument("--json", type=Path, default=None, help="Write every search's record.")
    # The DEHB side's own arguments: where its records go and the budget the parent set.
    parser.add_argument("--dehb-child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--budget", type=int, default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    args = parse(argv)
    if args.dehb_child:
        dehb_child(args)
        return {}

    from bench import search_suite  # Ray's module is imported with it, but Ray never starts
    from orchestrator.tracking.writer import git_commit

    if args.suite == (args.benchmark is not None):
        raise SystemExit("error: give --suite or --benchmark (one of them)")
    specs = [f"lcbench:{task}" for task in DEV_TASKS] if args.suite else args.benchmark
    for spec in specs:
        if not spec.startswith("lcbench:"):
            raise SystemExit(f"error: --benchmark {spec}: the field's optimisers run on "
                             "lcbench:TASK only (meld is orch's own replay table)")  # fmt: skip
        try:
            surrogate(str(lcbench_dir(args.lcbench_dir))).task_index(spec.split(":", 1)[1])
        except LCBenchError as error:
            raise SystemExit(f"error: --benchmark {spec}: {error}") from None
    unknown = set(args.strategies) - set(STRATEGIES)
    if unknown:
        raise SystemExit(f"error: --strategies: unknown {', '.join(sorted(unknown))}")
    args.full_trials = args.full_trials or search_suite.FULL_TRIALS
    for name in ("seeds", "full_trials", "epochs"):
        if getattr(args, name) < 1:
            raise SystemExit(f"error: --{name.replace('_', '-')} must be >= 1")
    if not 1 <= args.epochs <= EPOCHS:
        raise SystemExit(f"error: --epochs must be 1..{EPOCHS}")
    if "dehb" in args.strategies and not Path(args.dehb_python).is_file():
        raise SystemExit(f"error: dehb needs its own venv, {args.dehb_python} is missing; "
                         f"create it (in {REPO}): {DEHB_INSTALL}")  # fmt: skip
    budget = search_suite.trial_epochs_budget(args.full_trials, args.epochs)
    commit = git_commit(REPO)  # the code that runs: read before, as others may commit meanwhile
    runs, started, load = [], time.perf_counter(), os.getloadavg()[0]
    for spec in specs:
        for strategy in (s for s in STRATEGIES if s in args.strategies):
            if strategy == "dehb":
                runs += run_dehb_parent(spec, budget, args)
                continue
            for seed in range(args.first_seed, args.first_seed + args.seeds):
                runs.append(run_optuna(strategy, spec, seed, budget, args))
                progress(runs[-1])
    wall = time.perf_counter() - started
    print(f"{len(runs)} searches in {wall:.0f} s, sequential; {args.full_trials} full trials' "
          f"worth of trial-epochs per search ({budget})")  # fmt: skip
    tables, ranks = search_suite.summarise(runs, args.reference)
    search_suite.print_summary(tables, ranks, args.reference)
    out = {"provenance": {"command": " ".join(["python", "bench/field_optimisers.py", *argv]),
                          "commit": commit, "wall_s": round(wall, 1),
                          "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} CPUs",
                          "load_avg_start": load},
           "args": {k: str(v) for k, v in vars(args).items()}, "tables": tables,
           "mean_ranks": ranks, "runs": runs}  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
