"""Two configs trained on the same seeds, compared seed by seed (the paper's 5-run protocol).

    python bench/paired_seeds.py                                  # results/meld/seeds/
    python bench/paired_seeds.py --a reference --b searched --json paired.json
    python bench/paired_seeds.py --a searched --b searched_6ep --markdown   # RESULTS.md rows

Reads the per-seed JSON files ``bench/seed_runs.py`` writes (``CONFIG_seedS.json``: the output
of ``orch train --json`` plus its command, commit and wall time) and prints, per config, the
mean ± sample std of test weighted F1 and accuracy and the mean test F1 of every class; then,
for the seeds both configs have, the difference b - a per seed, its mean and sample std, a
two-sided paired t-test p-value and how many seeds b won.

Seeds of one config are averaged only if they were trained with the same settings: a file
whose params differ from the others' in anything but the seed (and where the data was read
from) is refused with the setting named, as ``orch evaluate`` refuses to mix them. Only the
settings both files record are compared (a seed run before orch recorded a field lacks it).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shlex
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDER = ROOT / "results" / "meld" / "seeds"
NOT_SETTINGS = ("seed", "data_dir", "device")  # what may differ between seeds of one config
SHOWN = ("weighted_f1", "accuracy")
NAME = re.compile(r"^(?P<config>.+)_seed(?P<seed>\d+)\.json$")


class PairingError(ValueError):
    """Seeds that cannot be averaged or paired; the message names the file and setting."""


def load(folder: Path, config: str) -> dict[int, dict]:
    """Seed -> that seed's record, for files ``CONFIG_seedS.json``; refused when the seeds'
    settings differ in anything but the seed."""
    runs: dict[int, dict] = {}
    for path in sorted(folder.glob(f"{config}_seed*.json")):
        match = NAME.match(path.name)
        if match is None or match["config"] != config:
            continue
        record = json.loads(path.read_text())
        record["_file"] = path.name
        runs[int(match["seed"])] = record
    if not runs:
        raise PairingError(f"no {config}_seed*.json in {folder}")
    first = next(iter(runs.values()))
    for record in runs.values():
        # The command each seed ran (what bench/seed_runs.py records: `orch train --json`
        # prints no params): equal but for --seed.
        if "command" in first and "command" in record:
            ours, theirs = command_settings(first["command"]), command_settings(record["command"])
            for key in sorted(set(ours) | set(theirs)):
                if ours.get(key) != theirs.get(key):
                    raise PairingError(
                        f"{record['_file']}: {key} {theirs.get(key, '(not given)')} but "
                        f"{first['_file']} has {ours.get(key, '(not given)')}; seeds of one "
                        "config must differ only by the seed"
                    )
        # Settings both files record: a field added to orch after a seed ran is not in its
        # params, which says nothing about how that seed trained.
        for key in sorted(set(first.get("params", {})) & set(record.get("params", {}))):
            if key in NOT_SETTINGS:
                continue
            if first["params"].get(key) != record["params"].get(key):
                raise PairingError(
                    f"{record['_file']}: {key} = {record['params'].get(key)} but "
                    f"{first['_file']} has {first['params'].get(key)}; seeds of one config must "
                    "differ only by the seed"
                )
    return runs


def command_settings(command: str) -> dict[str, str]:
    """``--option value`` pairs of an ``orch train`` command line (a flag's value: True),
    less ``--seed`` and ``--json``."""
    words = shlex.split(command)
    settings: dict[str, str] = {}
    for i, word in enumerate(words):
        if not word.startswith("--"):
            continue
        following = words[i + 1] if i + 1 < len(words) else "--"
        settings[word] = "True" if following.startswith("--") else following
    for key in ("--seed", "--json"):
        settings.pop(key, None)
    return settings


def t_sf(t: float, df: int) -> float:
    """P(T > t) for Student's t with ``df`` degrees of freedom (scipy's, which sklearn
    brings)."""
    from scipy.stats import t as student

    return float(student.sf(t, df))


def summary(runs: dict[int, dict]) -> dict:
    """Mean and sample std (n - 1) of the shown test metrics; mean test F1 per class."""
    out: dict = {"seeds": sorted(runs)}
    for metric in SHOWN:
        values = [runs[s]["test"][metric] for s in sorted(runs)]
        out[metric] = {
            "per_seed": values,
            "mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else float("nan"),
        }
    classes = sorted({k for r in runs.values() for k in r["test"] if k.startswith("f1_")})
    out["class_f1"] = {
        k[3:]: {
            "per_seed": [runs[s]["test"].get(k) for s in sorted(runs)],
            "mean": statistics.fmean(runs[s]["test"].get(k, 0.0) for s in sorted(runs)),
        }
        for k in classes
    }
    return out


def paired(a: dict[int, dict], b: dict[int, dict], metric: str = "weighted_f1") -> dict:
    """b - a per common seed: mean, sample std, two-sided paired t-test p, seeds b won."""
    seeds = sorted(set(a) & set(b))
    if len(seeds) < 2:
        raise PairingError(f"need two or more seeds both configs have, got {seeds}")
    diffs = [b[s]["test"][metric] - a[s]["test"][metric] for s in seeds]
    mean, std = statistics.fmean(diffs), statistics.stdev(diffs)
    n = len(diffs)
    if std == 0:
        p = 0.0 if mean != 0 else 1.0
    else:
        t = mean / (std / math.sqrt(n))
        p = 2 * t_sf(abs(t), n - 1)
    return {
        "metric": metric,
        "seeds": seeds,
        "diff_per_seed": diffs,
        "mean": mean,
        "std": std,
        "p": p,
        "b_won": sum(d > 0 for d in diffs),
    }


def lines(name_a: str, name_b: str, sa: dict, sb: dict, pair: dict) -> list[str]:
    out = []
    for name, s in ((name_a, sa), (name_b, sb)):
        f1, acc = s["weighted_f1"], s["accuracy"]
        out.append(
            f"{name}: seeds {', '.join(map(str, s['seeds']))}: test weighted F1 "
            f"{f1['mean']:.2f} ± {f1['std']:.2f}, accuracy {acc['mean']:.2f} ± {acc['std']:.2f}"
        )
        out.append(
            "  class F1 means: "
            + ", ".join(f"{c} {v['mean']:.1f}" for c, v in s["class_f1"].items())
        )
    for cls in ("fear", "disgust"):
        if cls in sa["class_f1"] and cls in sb["class_f1"]:
            show = lambda v: " ".join(f"{x:.1f}" for x in v)  # noqa: E731
            out.append(
                f"  {cls} F1 per seed: {name_a} {show(sa['class_f1'][cls]['per_seed'])}; "
                f"{name_b} {show(sb['class_f1'][cls]['per_seed'])}"
            )
    n = len(pair["seeds"])
    out.append(
        f"{name_b} - {name_a}, test weighted F1, paired over seeds "
        f"{', '.join(map(str, pair['seeds']))}: better on {pair['b_won']} of {n} seeds, mean "
        f"difference {pair['mean']:+.2f} ± {pair['std']:.2f}, paired t-test p = {pair['p']:.3g}"
    )
    return out


def table(folder: Path, names: list[str], runs: list[dict[int, dict]]) -> list[str]:
    """RESULTS.md's rows: per seed the test weighted F1 linked to its JSON (best dev epoch,
    wall time), then mean ± sample std. Links are relative to the repository's root (where
    RESULTS.md is) when the folder is inside it."""
    seeds = sorted(set().union(*runs))
    try:
        base = folder.resolve().relative_to(ROOT).as_posix()
    except ValueError:
        base = folder.as_posix()
    rows = [
        "| config | " + " | ".join(f"seed {s}" for s in seeds) + " | mean ± std |",
        "|---" * (len(seeds) + 2) + "|",
    ]
    for name, config in zip(names, runs, strict=True):
        cells = []
        for seed in seeds:
            record = config.get(seed)
            if record is None:
                cells.append("")
                continue
            facts = [f"best epoch {record['best_epoch']}"] if "best_epoch" in record else []
            facts += [f"{record['wall_s']} s"] if "wall_s" in record else []
            cell = f"[{record['test']['weighted_f1']:.2f}]({base}/{record['_file']})"
            cells.append(cell + (f" ({'; '.join(facts)})" if facts else ""))
        f1 = summary(config)["weighted_f1"]
        mean = f"{f1['mean']:.2f} ± {f1['std']:.2f} ({len(config)} seeds)"
        rows.append(f"| {name} | " + " | ".join(cells) + f" | {mean} |")
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, default=FOLDER)
    parser.add_argument("--a", default="reference", help="The baseline config.")
    parser.add_argument("--b", default="searched", help="The config compared with it.")
    parser.add_argument("--json", type=Path, default=None, help="Also write the numbers here.")
    parser.add_argument(
        "--markdown", action="store_true", help="Also print the two rows as RESULTS.md's table."
    )
    args = parser.parse_args(argv)
    try:
        a, b = load(args.folder, args.a), load(args.folder, args.b)
        pair = paired(a, b)
    except PairingError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    sa, sb = summary(a), summary(b)
    print("\n".join(lines(args.a, args.b, sa, sb, pair)))
    if args.markdown:
        print("\n" + "\n".join(table(args.folder, [args.a, args.b], [a, b])))
    if args.json:
        args.json.write_text(json.dumps({args.a: sa, args.b: sb, "paired": pair}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
