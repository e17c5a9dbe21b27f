"""How far the frozen-encoder screen can be trusted: the same configs trained frozen and
fine-tuned, and the Spearman rank correlation of their dev scores.

    python bench/fidelity_correlation.py                       # 8 configs, MELD subset, MiniLM
    python bench/fidelity_correlation.py --configs 12 --dialogues 200 --epochs 3 --out r.json
    python bench/fidelity_correlation.py --protocol quantile   # the first runs' lr mapping

Configs are drawn from the paper space (text only: no fusion dimensions; K up to ``--k-max``,
the frozen MELD search's 14) with a seeded random sampler. Both fidelities get the same K,
layers, dropout and warm-up (the same share of training as on full MELD: ``scaled_warmup``).
The learning rate follows ``--protocol``: ``encoder-lr`` (default) is what
``orch evaluate --finetune`` does with a screen's winner, the searched rate for the layers
above the encoder and ``--encoder-lr`` inside it; ``quantile`` gives the fine-tuned run the
same quantile of the fine-tuning range (``search_spaces.spaces.LR_RANGES``) for every layer. Each config is trained once per fidelity on
the first ``--dialogues`` dialogues of every MELD split, and judged by its best dev weighted F1
(the search metric). A correlation near 1 means a frozen search ranks configs the way a
fine-tuning one would.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def draw_configs(n: int, seed: int, k_max: int) -> list[dict]:
    import functools

    import optuna

    from search_spaces import bounded

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = bounded("paper", 11, encoder="minilm", frozen=True, modalities=("u",))
    space = functools.partial(space.func, **{**space.keywords, "k_max": k_max})
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    configs = []
    for _ in range(n):
        trial = study.ask()
        constants = space(trial)
        configs.append({**trial.params, **constants, "encoder": "minilm"})
        study.tell(trial, 0.0)
    return configs


def same_quantile(lr: float, source: tuple[float, float], target: tuple[float, float]) -> float:
    """``lr``'s position in ``source`` (log scale), moved to ``target``."""
    q = (math.log(lr) - math.log(source[0])) / (math.log(source[1]) - math.log(source[0]))
    return math.exp(math.log(target[0]) + q * (math.log(target[1]) - math.log(target[0])))


FULL_MELD_STEPS = 260 * 10  # optimizer steps of a full-MELD trial: 1,039 dialogues / 4 x 10


def scaled_warmup(warmup: int, args) -> int:
    """The same share of training as warm-up: the space's warm-up (up to 2,000 steps) is
    meant for full MELD, and on a subset it would outlast the whole run."""
    steps = -(-args.dialogues // 4) * args.epochs
    return round(warmup * steps / FULL_MELD_STEPS)


def train(config: dict, frozen: bool, args, cache: Path) -> tuple[float, float]:
    """(best dev weighted F1, seconds) of one training."""
    from trainable.config import DialogueTRMConfig, TrainConfig
    from trainable.run import prepare

    model_keys = set(DialogueTRMConfig.__dataclass_fields__)
    train_keys = set(TrainConfig.__dataclass_fields__)
    model = DialogueTRMConfig(
        **{k: v for k, v in config.items() if k in model_keys}, freeze_encoder=frozen
    )
    values = {k: v for k, v in config.items() if k in train_keys}
    values["warmup_steps"] = scaled_warmup(values.get("warmup_steps", 0), args)
    train_cfg = TrainConfig(**{**values, "epochs": args.epochs, "seed": args.seed, "device": "cpu"})
    started = time.perf_counter()
    trainer = prepare(
        "meld", model, train_cfg, data_dir=args.data_dir, max_dialogues=args.dialogues,
        cache_dir=cache,
    )  # fmt: skip
    best = trainer.fit()
    return float(best["dev_weighted_f1"]), time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", type=int, default=8)
    parser.add_argument("--dialogues", type=int, default=100, help="Per split (a subset).")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--k-max", type=int, default=14, help="Largest K drawn (the frozen search's: 14)."
    )
    parser.add_argument("--protocol", choices=("encoder-lr", "quantile"), default="encoder-lr")
    parser.add_argument("--encoder-lr", type=float, default=3e-5, help="With encoder-lr.")
    parser.add_argument(
        "--hidden-size", type=int, default=768, help="Of the layers above (MiniLM's width: 384)."
    )
    parser.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data" / "meld"))
    parser.add_argument("--out", type=Path, default=None, help="Write the raw results as JSON.")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from scipy.stats import spearmanr

    from search_spaces.spaces import LR_RANGES

    configs = draw_configs(args.configs, args.seed, args.k_max)
    rows = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="orch-fidelity-") as tmp:
        for i, frozen_config in enumerate(configs):
            frozen_config["hidden_size"] = args.hidden_size
            if args.protocol == "quantile":
                lr = same_quantile(frozen_config["lr"], LR_RANGES["frozen"], LR_RANGES["finetune"])
                finetune_config = {**frozen_config, "lr": lr}
            else:
                lr = frozen_config["lr"]
                finetune_config = {**frozen_config, "encoder_lr": args.encoder_lr}
            frozen_f1, frozen_s = train(frozen_config, True, args, Path(tmp))
            finetune_f1, finetune_s = train(finetune_config, False, args, Path(tmp))
            rows.append({
                "config": {k: v for k, v in frozen_config.items() if k != "lr"},
                "lr_frozen": frozen_config["lr"], "lr_finetune": lr,
                "dev_f1_frozen": frozen_f1, "dev_f1_finetune": finetune_f1,
                "seconds_frozen": frozen_s, "seconds_finetune": finetune_s,
            })  # fmt: skip
            print(
                f"{i + 1}/{len(configs)} K={frozen_config['k']} "
                f"layers={frozen_config['intra_layers']}: frozen {frozen_f1:.1f} "
                f"({frozen_s:.0f} s), fine-tuned {finetune_f1:.1f} ({finetune_s:.0f} s)",
                flush=True,
            )
    rho, p = spearmanr([r["dev_f1_frozen"] for r in rows], [r["dev_f1_finetune"] for r in rows])
    print(
        f"Spearman rank correlation of dev weighted F1, frozen vs fine-tuned: {rho:.3f} (p={p:.3f})"
    )
    if args.out:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True
        ).stdout.strip()
        args.out.write_text(json.dumps({
            "command": "python bench/fidelity_correlation.py " + " ".join(
                f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()
                if k not in ("out", "data_dir")
            ),
            "commit": commit, "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
            "wall_s": time.perf_counter() - started, "spearman": rho, "p_value": p,
            "rows": rows,
        }, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
