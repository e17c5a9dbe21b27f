"""The CPU half of ``bench/gpu_check.py``: the memory settings it compares, the estimate's
view of its batches, bisection for the largest K, judging a fractional-GPU run from its
workers' reports, and the text report. Nothing here touches CUDA, so tests run it on CPU.

GB means GiB (2**30 bytes) throughout, as in ``search_spaces/budget.py``.
"""

from __future__ import annotations

import dataclasses
import json
from collections import namedtuple
from collections.abc import Callable
from pathlib import Path

from orchestrator.resources import CUDA_CONTEXT_GB, gpu_share
from search_spaces.budget import K_CEILING, MemoryProfile

DATASETS = {"iemocap": (3, 64), "meld": (2, 24)}  # (modalities, default turns)
GOAL_K = 56


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


def gb_text(value: float | None, oom: bool = False) -> str:
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
            f"{gb_text(r.get('allocated_gb'), oom):>10} {gb_text(reserved, oom):>9} {ratio:>13}{low}"
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
