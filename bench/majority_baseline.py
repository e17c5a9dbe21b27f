"""The floor every result must clear: always predict the training split's most frequent class.

    python bench/majority_baseline.py --dataset meld --out results/meld/majority.json

Scored with the same metrics code as every trained model (``trainable.metrics``), on the
official dev and test splits.
"""

from __future__ import annotations

import argparse
import json
import subprocess
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="meld")
    parser.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data" / "meld"))
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    from trainable.datasets import load_dataset
    from trainable.metrics import categorical_metrics

    splits = load_dataset(args.dataset, args.data_dir)
    majority = Counter(y for d in splits.train for y in d.labels).most_common(1)[0][0]
    result = {
        "command": f"python bench/majority_baseline.py --dataset {args.dataset}",
        "commit": subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True
        ).stdout.strip(),
        "predicts": splits.label_names[majority],
    }
    for split in ("dev", "test"):
        labels = [y for d in getattr(splits, split) for y in d.labels]
        metrics = categorical_metrics(labels, [majority] * len(labels), splits.label_names)
        result[split] = metrics
        print(
            f"{split}: always {splits.label_names[majority]!r}: weighted F1 "
            f"{metrics['weighted_f1']:.2f}, accuracy {metrics['accuracy']:.2f} ({len(labels)} turns)"
        )
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
