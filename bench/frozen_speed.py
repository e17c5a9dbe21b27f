"""A frozen-encoder training epoch against a fine-tuning epoch of the same model, one process.

    python bench/frozen_speed.py                     # MiniLM, MELD's first 100 dialogues/split
    python bench/frozen_speed.py --dialogues 0       # full MELD (a fine-tuning epoch: ~15 min)

Both trainers are built from the same config (the paper's model with ``--encoder``, K and max
length as given) and seed; each runs one training epoch, timed alone. The frozen trainer's
vectors are computed first (timed separately: the one-off cost a cold cache pays per K), so
its epoch is the warm-cache epoch every later trial pays. Prints seconds and the ratio.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", default="minilm")
    parser.add_argument("--dialogues", type=int, default=100, help="Per split; 0: all.")
    parser.add_argument("--k", type=int, default=14)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument(
        "--hidden-size", type=int, default=768, help="Of the layers above (paper: 768)."
    )
    parser.add_argument("--intra-layers", type=int, default=6)
    parser.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data" / "meld"))
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch

    from trainable.config import DialogueTRMConfig, TrainConfig
    from trainable.run import prepare

    subset = args.dialogues or None
    train = TrainConfig(lr=3e-5, warmup_steps=200, epochs=1, device="cpu")
    times = {}
    with tempfile.TemporaryDirectory(prefix="orch-frozen-bench-") as tmp:
        for frozen in (True, False):
            config = DialogueTRMConfig(
                encoder=args.encoder,
                k=args.k,
                max_length=args.max_length,
                hidden_size=args.hidden_size,
                intra_layers=args.intra_layers,
                freeze_encoder=frozen,
            )
            started = time.perf_counter()
            trainer = prepare(
                "meld", config, train, data_dir=args.data_dir, max_dialogues=subset,
                cache_dir=Path(tmp),
            )  # fmt: skip
            times["frozen prepare (encodes every input once)" if frozen else "prepare"] = (
                time.perf_counter() - started
            )
            torch.manual_seed(0)
            started = time.perf_counter()
            trainer.train_epoch()
            times["frozen epoch" if frozen else "fine-tuning epoch"] = time.perf_counter() - started
            turns = sum(len(d["labels"]) for d in trainer.data.train)
    print(
        f"{args.encoder}, MELD {'all' if not subset else subset} dialogues/split "
        f"({turns:,} training turns), K {args.k}, hidden {args.hidden_size}, "
        f"{args.intra_layers} intra layers, {torch.get_num_threads()} threads"
    )
    for name, seconds in times.items():
        print(f"  {name:<44}{seconds:>9.1f} s")
    ratio = times["fine-tuning epoch"] / times["frozen epoch"]
    print(f"fine-tuning epoch / frozen epoch (warm cache): {ratio:.1f}x")


if __name__ == "__main__":
    main()
