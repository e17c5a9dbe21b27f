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
GB means GiB (2**30 bytes) throughout, as in ``budget.py``.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import math
import multiprocessing as mp
import sys
import time
from collections import namedtuple
from collections.abc import Callable
from pathlib import Path
from queue import Empty
from types import SimpleNamespace

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from orchestrator.resources import CUDA_CONTEXT_GB, gpu_share  # noqa: E402
from search_spaces.budget import (  # noqa: E402
    GB,
    K_CEILING,
    MemoryProfile,
    estimate_gb,
    largest_k,
    sequence_length,
)
from trainable.config import DialogueTRMConfig, TrainConfig  # noqa: E402

# Feature widths by modality count, as in the paper: MELD audio 300; IEMOCAP audio 100, visual 512.
FEATURE_DIMS = {1: (0, 0), 2: (300, 0), 3: (100, 512)}
DATASETS = {"iemocap": (3, 64), "meld": (2, 24)}  # (modalities, default turns)
GOAL_K = 56
BARRIER_S = 600.0  # how long a share worker waits for the others before giving up
VOCAB = 30522  # BERT-base's vocabulary (transformers' BertConfig default)


Setting = namedtuple("Setting", "name precision checkpointing chunked")
SETTINGS = (
    Setting("fp32", "fp32", False, False),
    Setting("bf16", "bf16", False, False),
    Setting("bf16+ckpt", "bf16", True, False),
    Setting("bf16+ckpt+chunks", "bf16", True, True),
)
BASELINE, FAST = SETTINGS[0], SETTINGS[-1]
BY_NAME = {s.name: s for s in SETTINGS}


def build_profile(
    dataset: str, turns: int | None, utterance_tokens: int, max_length: int, batch_size: int
) -> MemoryProfile:
    """The estimate's view of the synthetic batches: every turn real, lengths by K."""
    modalities, default_turns = DATASETS[dataset]
    turns = turns or default_turns
    shape = {"max_length": max_length, "batch_size": batch_size, "modalities": modalities}
    shape.update(turns=turns, valid_turns=float(turns))
    if dataset == "meld":  # MELD's measured worst-batch lengths, the profile's default
        return dataclasses.replace(MemoryProfile(), **shape)
    # Two speakers taking turns: a K-turn window holds ~K/2 turns of the speaker's own, each
    # ~utterance_tokens long, around [CLS] utterance [SEP] ... [SEP].
    u = float(utterance_tokens)
    tokens = ((0, 3 + u), (K_CEILING, 3 + u * (1 + K_CEILING / 2)))
    return MemoryProfile(tokens=tokens, **shape)


def at(profile: MemoryProfile, setting: Setting, chunk_size: int) -> MemoryProfile:
    """The profile under one memory setting."""
    return dataclasses.replace(
        profile,
        precision=setting.precision,
        gradient_checkpointing=setting.checkpointing,
        chunk_size=chunk_size if setting.chunked else 0,
    )


def grid(ks: list[int], settings=SETTINGS) -> list[tuple[int, Setting]]:
    """The peak-memory points: every K under every setting."""
    return [(k, s) for k in ks for s in settings]


def bisect_largest(fits: Callable[[int], bool], low: int = 0, high: int = K_CEILING) -> int | None:
    """The largest k in [low, high] with ``fits(k)``, for a predicate that holds up to some k
    and fails beyond it (memory grows with K); None when even ``low`` fails. Each probe is a
    training run, hence bisection: about log2(high - low) + 2 of them."""
    if not fits(low):
        return None
    if fits(high):
        return high
    while high - low > 1:  # fits(low) holds and fits(high) fails
        mid = (low + high) // 2
        low, high = (mid, high) if fits(mid) else (low, mid)
    return low


def throughput_ratio(base: dict, fast: dict) -> float | None:
    """Utterances per second of the fast setting over the baseline's; None if either failed."""
    if not base.get("utt_per_s") or not fast.get("utt_per_s"):
        return None
    return fast["utt_per_s"] / base["utt_per_s"]


def trials_per_card(budget_gb: float, card_gb: float, context_gb: float = CUDA_CONTEXT_GB) -> int:
    return round(1 / gpu_share(budget_gb, card_gb, context_gb))


def check_share(workers: list[dict], budget_gb: float, card_gb: float) -> dict:
    """Judge a fractional-GPU run from each worker's report: ``reserved_gb`` (its allocator's
    peak), ``oom``, ``error``, and, read while every worker was alive after training,
    ``held_gb`` (its allocator then) and ``free_end_gb`` (the card's free memory then).

    What the card uses beyond the allocators is the CUDA contexts (plus anything else on the
    card, the parent's context included: an upper bound), spread over the workers."""
    n = len(workers)
    problems = [f"worker {w['rank']}: {w['error']}" for w in workers if w.get("error")]
    for w in workers:
        if w.get("oom"):
            problems.append(f"worker {w['rank']}: out of memory ({w.get('oom_message', '')})")
        if w.get("reserved_gb", 0.0) > budget_gb:
            problems.append(
                f"worker {w['rank']}: its allocator held {w['reserved_gb']:.2f} GB, over its "
                f"{budget_gb:g} GB share"
            )
    out = {"n": n, "budget_gb": budget_gb, "card_gb": card_gb, "workers": workers}
    out.update(context_gb=None, trials_that_fit=None, gpu_share_trials=None)
    if n and all("free_end_gb" in w for w in workers):  # else a worker failed: no reading
        used = card_gb - min(w["free_end_gb"] for w in workers)
        context = max(0.0, (used - sum(w["held_gb"] for w in workers)) / n)
        fit = trials_per_card(budget_gb, card_gb, context)
        planned = trials_per_card(budget_gb, card_gb)  # what gpu_share gives this card
        out.update(context_gb=context, trials_that_fit=fit, gpu_share_trials=planned)
        # Each trial may grow to its cap: n caps and n contexts must fit, not just this run's.
        if n * (budget_gb + context) > card_gb:
            problems.append(
                f"{n} x ({budget_gb:g} GB + {context:.2f} GB context) = "
                f"{n * (budget_gb + context):.1f} GB > the card's {card_gb:.1f} GB: {fit} fit"
            )
        if planned > fit:
            problems.append(
                f"gpu_share packs {planned} trials on this card, but with the measured context "
                f"({context:.2f} GB; CUDA_CONTEXT_GB = {CUDA_CONTEXT_GB}) only {fit} fit"
            )
    return {**out, "problems": problems, "ok": not problems}


def _gb(value: float | None, oom: bool = False) -> str:
    return "OOM" if oom else "-" if value is None else f"{value:.2f}"


def peak_table(rows: list[dict]) -> str:
    """Estimate against measured per (K, setting); measured columns are '-' before a run."""
    lines = ["   K  setting            estimate  allocated  reserved  est/reserved"]
    for r in rows:
        oom, reserved = r.get("oom", False), r.get("reserved_gb")
        ratio = "-" if oom or not reserved else f"{r['estimate_gb'] / reserved:.2f}"
        low = "  estimate low" if reserved and not oom and r["estimate_gb"] < reserved else ""
        lines.append(
            f"{r['k']:4}  {r['setting']:17} {r['estimate_gb']:9.2f} "
            f"{_gb(r.get('allocated_gb'), oom):>10} {_gb(reserved, oom):>9} {ratio:>13}{low}"
        )
    return "\n".join(lines)


def report(results: dict) -> str:
    """Every section present in ``results``, as text (estimates alone on a dry run)."""
    s = results["shapes"]
    out = [
        f"{results['device']}: {s['dataset']}-like dialogues, batch "
        f"{s['batch_size']} x {s['turns']} turns; encoder input tokens at K "
        + ", ".join(f"{k}: {t}" for k, t in s["tokens"].items())
        + f" (max_length {s['max_length']}); chunks of {s['chunk_size']} turns"
    ]
    if "peak" in results:
        out += ["", "peak memory per training step (GB):", peak_table(results["peak"])]
    if "reach" in results:
        budget = results["budget_gb"]
        out += ["", f"largest K within {budget:g} GB (K <= {K_CEILING}):"]
        out.append("  setting            estimate  measured")
        for r in results["reach"]:
            est, meas = r["estimated_k"], r.get("measured_k", "-")
            out.append(f"  {r['setting']:17} {est!s:>9} {meas!s:>9}")
        if "goal_met" in results:
            verdict = "met" if results["goal_met"] else "NOT met"
            out.append(f"goal K >= {GOAL_K} in {budget:g} GB with {FAST.name}: {verdict}")
    if "throughput" in results:
        t = results["throughput"]
        out += ["", f"training throughput at K = {t['k']}:"]
        for r in t["rows"]:
            speed = "OOM" if r.get("oom") else "-"
            if r.get("utt_per_s"):
                speed = f"{r['utt_per_s']:.1f} utt/s, reserved {r['reserved_gb']:.2f} GB"
            out.append(f"  {r['setting']:17} estimate {r['estimate_gb']:6.2f} GB   {speed}")
        if t.get("ratio") is not None:
            out.append(f"  ratio {FAST.name} / {BASELINE.name}: {t['ratio']:.2f}")
    if "share" in results:
        sh = results["share"]
        card, n, b = sh["card_gb"], sh["n"], sh["budget_gb"]
        out += ["", f"{n} trials sharing a {card:.1f} GB card, each capped at {b:g} GB "
                f"(fraction {b / card:.3f}), {sh['setting']} at K = {sh['k']} "
                f"(estimate {sh['estimate_gb']:.2f} GB)"]  # fmt: skip
        for w in sh.get("workers", []):
            if "reserved_gb" in w:
                out.append(
                    f"  worker {w['rank']}: allocated {w['allocated_gb']:.2f} GB, reserved "
                    f"{w['reserved_gb']:.2f} GB{', OOM' if w.get('oom') else ''}"
                )
        ctx = sh.get("context_gb")
        assumed = f"{ctx:.2f} GB measured" if ctx is not None else f"{CUDA_CONTEXT_GB} GB assumed"
        need = n * (b + (CUDA_CONTEXT_GB if ctx is None else ctx))
        fits = "fits" if need <= card else "does NOT fit"
        out.append(
            f"  contexts: {assumed} each; {n} x ({b:g} GB + context) = {need:.1f} GB: {fits}"
        )
        out.append(f"  gpu_share packs {trials_per_card(b, card)} trials on this card")
        out += [f"  PROBLEM: {p}" for p in sh.get("problems", [])]
        if "ok" in sh:
            out.append("  share check: " + ("ok" if sh["ok"] else "FAILED"))
    return "\n".join(out)


def write_json(results: dict, path: str) -> None:
    Path(path).write_text(json.dumps(results, indent=2, default=str) + "\n")


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
    # The engine's own step (backward per chunk, clipping, fused AdamW): what a trial runs. Its
    # constructor reads only the number of training dialogues and the pad id from these two.
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
        print(f"  K={row['k']} {row['setting']}: {_gb(row['reserved_gb'], row['oom'])}", flush=True)
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
