"""The checks of ``search_spaces/budget.py`` that need a GPU: measured peak memory against the
estimate, the largest K within a budget, training throughput, and N trials sharing one card.

    python bench/gpu_check.py --dry-run               # any machine: the plan and its estimates
    python bench/gpu_check.py --all --json gpu.json   # CUDA: every check (minutes on an H100)
    python bench/gpu_check.py --peak | --reach | --throughput | --share [N]

Models have the paper's shapes (BERT-base encoder, 6 intra / 4 inter layers, hidden 768, FFN
2048, batch 4) and random weights built from configs: nothing is downloaded. Batches are
synthetic dialogues of ``--turns`` real turns; with ``--dataset iemocap`` (three modalities)
each encoder input holds the utterance and its speaker's ~K/2 turns of a K-turn window (two
speakers taking turns) at ``--utterance-tokens`` tokens each, up to ``--max-length``. The
estimate is computed for exactly these shapes, so the two compare like with like.

Measured: ``max_memory_allocated`` (tensors) and ``max_memory_reserved`` (what the caching
allocator holds: what ``set_per_process_memory_fraction`` caps and the estimate models), from
building the model to the last of ``--steps`` steps of ``trainable.engine.Trainer._step``.
GB means GiB (2**30 bytes) throughout, as in ``budget.py``. The settings, the bisection, the
judging of the share run and the report live in ``bench/gpu_report.py`` (tested on CPU).
"""

from __future__ import annotations

import argparse
import gc
import math
import multiprocessing as mp
import sys
import time
from pathlib import Path
from queue import Empty
from types import SimpleNamespace

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.gpu_report import (  # noqa: E402
    BASELINE,
    BY_NAME,
    DATASETS,
    FAST,
    GOAL_K,
    SETTINGS,
    at,
    bisect_largest,
    build_profile,
    check_share,
    gb_text,
    grid,
    report,
    throughput_ratio,
    trials_per_card,
    write_json,
)
from search_spaces.budget import GB, MemoryProfile, estimate_gb, largest_k, sequence_length  # noqa: E402
from trainable.config import DialogueTRMConfig, TrainConfig  # noqa: E402

# Feature widths by modality count, as in the paper: MELD audio 300; IEMOCAP audio 100, visual 512.
FEATURE_DIMS = {1: (0, 0), 2: (300, 0), 3: (100, 512)}
BARRIER_S = 600.0  # how long a share worker waits for the others before giving up
VOCAB = 30522  # BERT-base's vocabulary (transformers' BertConfig default)


# -- CUDA: everything below runs only behind torch.cuda.is_available() ------------------------


def first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [""])[0][:200]


# Fields the model's config takes from the profile unchanged.
SHARED = ("hidden_size", "intra_layers", "intra_heads", "inter_layers", "inter_heads", "ffn_size")
SHARED += ("max_length", "precision", "gradient_checkpointing", "chunk_size")


def model_config(profile: MemoryProfile, k: int) -> DialogueTRMConfig:
    audio, visual = FEATURE_DIMS[profile.modalities]
    shared = {name: getattr(profile, name) for name in SHARED}
    return DialogueTRMConfig(k=k, audio_dim=audio, visual_dim=visual, **shared)


def synthetic_batch(profile: MemoryProfile, k: int, device) -> dict:
    """A batch of the profile's shape at window K: every turn real, labels random."""
    B, L, T = profile.batch_size, profile.turns, math.ceil(sequence_length(k, profile))
    g = torch.Generator().manual_seed(k)
    ids = torch.randint(1000, VOCAB, (B, L, T), generator=g)
    batch = {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "token_type_ids": torch.zeros_like(ids),
        "turn_mask": torch.ones(B, L, dtype=torch.bool),
        "labels": torch.randint(0, 6, (B, L), generator=g),
    }
    audio, visual = FEATURE_DIMS[profile.modalities]
    for name, dim in (("audio", audio), ("visual", visual)):
        if dim:
            batch[name] = torch.randn(B, L, dim, generator=g)
    return {name: t.to(device) for name, t in batch.items()}


def _run(profile: MemoryProfile, k: int, device, steps: int) -> float | None:
    from transformers import BertConfig, BertModel

    from trainable.engine import Trainer
    from trainable.model import DialogueTRM

    torch.manual_seed(0)
    bert = BertConfig(max_position_embeddings=max(512, profile.max_length))  # BERT-base shape
    with torch.device(device):  # initialise on the GPU: a CPU init of BERT-base takes seconds
        model = DialogueTRM(model_config(profile, k), BertModel(bert, add_pooling_layer=False))
    batch = synthetic_batch(profile, k, device)
    B, L = profile.batch_size, profile.turns
    # The engine's own step (encoder backward per chunk, clipping, fused AdamW): what a trial
    # runs. Its constructor reads only the number of training dialogues and the pad id here.
    train = TrainConfig(device=str(device), batch_size=B, epochs=steps, warmup_steps=0)
    data, tokenizer = SimpleNamespace(train=[None] * B), SimpleNamespace(pad_token_id=0)
    trainer = Trainer(model, tokenizer, data, train, label_names=[], dataset="synthetic")
    sync = torch.cuda.synchronize if device.type == "cuda" else lambda device: None
    trainer._step(batch)  # warm-up: kernels, cuBLAS handles, AdamW state
    sync(device)
    start = time.perf_counter()
    for _ in range(steps - 1):
        trainer._step(batch)
    sync(device)
    return (steps - 1) * B * L / (time.perf_counter() - start) if steps > 1 else None


def train_steps(profile: MemoryProfile, k: int, device, steps: int) -> dict:
    """Peak memory and speed of ``steps`` training steps at window K; an OOM is a result."""
    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    out = {"oom": False, "utt_per_s": None}
    try:  # _run's frame (model, optimizer) dies with the exception, freeing its memory
        out["utt_per_s"] = _run(profile, k, device, steps)
    except torch.OutOfMemoryError as error:
        out.update(oom=True, oom_message=first_line(error))
    out["allocated_gb"] = torch.cuda.max_memory_allocated(device) / GB
    out["reserved_gb"] = torch.cuda.max_memory_reserved(device) / GB
    gc.collect()
    torch.cuda.empty_cache()
    return out


def set_fraction(fraction: float, device: torch.device) -> None:
    index = torch.cuda.current_device() if device.index is None else device.index
    torch.cuda.set_per_process_memory_fraction(fraction, index)


def device_info(device) -> tuple[str, float]:
    props = torch.cuda.get_device_properties(device)
    return props.name, props.total_memory / GB


def share_worker(rank, budget_gb, profile, k, steps, barrier, queue) -> None:
    """One trial of the fractional run: caps its allocator at budget / card, trains, and once
    every worker has trained (and still holds its memory) reads the card's free memory."""
    out, sent = {"rank": rank}, False
    try:
        total = torch.cuda.mem_get_info()[1]  # the first CUDA call: creates this context
        out["card_gb"] = total / GB
        set_fraction(min(1.0, budget_gb * GB / total), torch.device("cuda"))
        out.update(train_steps(profile, k, torch.device("cuda"), steps))
        barrier.wait(BARRIER_S)
        out["held_gb"] = torch.cuda.memory_reserved() / GB
        out["free_end_gb"] = torch.cuda.mem_get_info()[0] / GB
        queue.put(out)
        sent = True
        barrier.wait(BARRIER_S)  # nobody exits, freeing memory, before all have read the card
    except Exception as error:  # noqa: BLE001 - the parent judges the run from the reports
        barrier.abort()
        if not sent:
            queue.put({**out, "error": f"{type(error).__name__} {first_line(error)}".strip()})


def run_workers(n: int, budget_gb: float, profile: MemoryProfile, k: int, steps: int) -> list:
    """Start n share workers at once (spawn: CUDA cannot run in forked children)."""
    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(n), ctx.Queue()
    args = (budget_gb, profile, k, steps, barrier, queue)
    procs = [ctx.Process(target=share_worker, args=(r, *args)) for r in range(n)]
    for p in procs:
        p.start()
    reports: dict[int, dict] = {}
    deadline = time.monotonic() + 3 * BARRIER_S
    while len(reports) < n:
        try:
            got = queue.get(timeout=max(1.0, deadline - time.monotonic()))
        except Empty:
            break
        reports[got["rank"]] = got
    for p in procs:
        p.join(timeout=120)
        if p.is_alive():
            p.terminate()
    return [reports.get(r, {"rank": r, "error": f"no report (exit {procs[r].exitcode})"})
            for r in range(n)]  # fmt: skip


# -- the run ---------------------------------------------------------------------------------


def estimates(args, profile: MemoryProfile, card_gb: float) -> dict:
    """The plan: every point each selected check measures, with the model's estimate."""
    chunk = args.chunk_size
    shapes = {"dataset": args.dataset, "batch_size": profile.batch_size, "turns": profile.turns}
    tokens = {k: math.ceil(sequence_length(k, profile)) for k in sorted({*args.ks, args.share_k})}
    shapes.update(tokens=tokens, max_length=profile.max_length, chunk_size=chunk)
    results: dict = {"shapes": shapes, "budget_gb": args.budget_gb}
    if args.peak:
        results["peak"] = [
            {"k": k, "setting": s.name, "estimate_gb": estimate_gb(k, at(profile, s, chunk))}
            for k, s in grid(args.ks)
        ]
    if args.reach:
        results["reach"] = [
            {"setting": s.name, "estimated_k": largest_k(args.budget_gb, at(profile, s, chunk))}
            for s in SETTINGS
        ]
    if args.throughput:
        k = args.throughput_k
        rows = [{"setting": s.name, "estimate_gb": estimate_gb(k, at(profile, s, chunk))}
                for s in (BASELINE, FAST)]  # fmt: skip
        results["throughput"] = {"k": k, "rows": rows}
    if args.share is not None:
        n = args.share or trials_per_card(args.budget_gb, card_gb)
        est = estimate_gb(args.share_k, at(profile, FAST, chunk))
        results["share"] = {"n": n, "budget_gb": args.budget_gb, "card_gb": card_gb}
        results["share"].update(k=args.share_k, setting=FAST.name, estimate_gb=est)
    return results


def measure(args, profile: MemoryProfile, results: dict) -> None:
    """Fill ``results`` with measurements on the GPU."""
    device, chunk = torch.device(args.device), args.chunk_size

    def run(setting: str, k: int, steps: int) -> dict:
        return train_steps(at(profile, BY_NAME[setting], chunk), k, device, steps)

    if "share" in results:  # first, before this process allocates anything on the card
        sh = results["share"]
        workers = run_workers(
            sh["n"], args.budget_gb, at(profile, FAST, chunk), sh["k"], args.steps
        )
        card = max((w.get("card_gb", 0.0) for w in workers), default=0.0) or sh["card_gb"]
        results["share"] = {**sh, **check_share(workers, args.budget_gb, card)}
    for row in results.get("peak", []):
        row.update(run(row["setting"], row["k"], args.steps))
        measured = gb_text(row["reserved_gb"], row["oom"])
        print(f"  K={row['k']} {row['setting']}: {measured}", flush=True)
    if "reach" in results:
        # Capped, the allocator fails where a trial's would: at the budget, not the card's size.
        set_fraction(min(1.0, args.budget_gb / results["card_gb"]), device)
        try:
            for row in results["reach"]:  # 2 steps: the second holds AdamW's state throughout
                row["measured_k"] = bisect_largest(
                    lambda k, s=row["setting"]: not run(s, k, 2)["oom"]
                )
                print(f"  {row['setting']}: K <= {row['measured_k']} fits", flush=True)
        finally:
            set_fraction(1.0, device)
        fast = results["reach"][-1]["measured_k"]
        results["goal_met"] = fast is not None and fast >= GOAL_K
    if "throughput" in results:
        t = results["throughput"]
        for row in t["rows"]:
            row.update(run(row["setting"], t["k"], max(3, args.steps)))
        t["ratio"] = throughput_ratio(*t["rows"])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--peak", action="store_true", help="estimate vs measured per K and setting")
    p.add_argument("--reach", action="store_true", help="largest K within the budget, bisected")
    p.add_argument("--throughput", action="store_true", help="fp32 vs bf16+ckpt+chunks speed")
    p.add_argument("--share", type=int, nargs="?", const=0, metavar="N",
                   help="N trials sharing the card (default N: what gpu_share packs)")  # fmt: skip
    p.add_argument("--all", action="store_true", help="every check (also when none is named)")
    p.add_argument("--dry-run", action="store_true", help="print the plan, measure nothing")
    p.add_argument("--json", metavar="OUT", help="also write the results to OUT")
    p.add_argument("--budget-gb", type=float, default=11.0, help="per-trial GPU memory budget")
    p.add_argument("--card-gb", type=float, default=80.0, help="card size a dry run plans for")
    p.add_argument("--dataset", choices=sorted(DATASETS), default="iemocap")
    p.add_argument("--turns", type=int, help="turns per dialogue (iemocap 64, meld 24)")
    p.add_argument("--utterance-tokens", type=int, default=16, help="iemocap: tokens per turn")
    p.add_argument("--max-length", type=int, default=512, help="cap on an encoder input")
    p.add_argument("--batch-size", type=int, default=4, help="dialogues per step")
    p.add_argument("--chunk-size", type=int, default=8, help="turns per chunk when chunked")
    p.add_argument("--ks", default="14,28,56", help="K values of --peak")
    p.add_argument("--throughput-k", type=int, default=14, help="K of --throughput")
    p.add_argument("--share-k", type=int, help="K of --share (default: the estimate's largest)")
    p.add_argument("--steps", type=int, default=3, help="steps per point (the first untimed)")
    p.add_argument("--device", default="cuda")
    args = p.parse_args(argv)
    args.ks = [int(k) for k in args.ks.split(",")]
    args.steps = max(2, args.steps)  # the first step creates AdamW's state: the peak is later
    if args.all or not (args.peak or args.reach or args.throughput or args.share is not None):
        args.peak = args.reach = args.throughput = True
        args.share = 0 if args.share is None else args.share
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    profile = build_profile(
        args.dataset, args.turns, args.utterance_tokens, args.max_length, args.batch_size
    )
    if not args.dry_run and not torch.cuda.is_available():
        print(
            f"no CUDA device: torch {torch.__version__} sees no GPU; this check needs one "
            "(--dry-run prints the plan without it)",
            file=sys.stderr,
        )
        return 2
    if args.share_k is None:  # near the cap: the share check means most when trials fill it
        args.share_k = largest_k(args.budget_gb, at(profile, FAST, args.chunk_size)) or 0
    name, card = ("plan", args.card_gb) if args.dry_run else device_info(torch.device(args.device))
    results = {"device": name, "card_gb": card, **estimates(args, profile, card)}
    if not args.dry_run:
        measure(args, profile, results)
    print(report(results))
    if args.json:
        write_json(results, args.json)
    return 0 if results.get("share", {}).get("ok", True) else 1


if __name__ == "__main__":
    sys.exit(main())
