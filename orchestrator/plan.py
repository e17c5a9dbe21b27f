"""`orch search --dry-run`: the plan of a search, as a person reads it and as JSON.

Every line says one thing (the data, each dimension of the space with its range, the
strategy, the length, what a trial gets, memory, time, disk) and none is wider than
``WIDTH``: a reprs dump of the bound space (thousands of characters of memory tables on one
line) told a user nothing.
"""

from __future__ import annotations

import functools
import textwrap

from orchestrator.tracking.store import resolve_tracking_uri

WIDTH = 100
LABEL = 12  # the label column: "per trial   ..."
DRAWS = 64  # configs drawn to see a define-by-run space's ranges (its branches included)
# What a memory=auto space picks per trial: not fixed, summarised under "memory".
MEMORY_PLAN = ("memory", "precision", "gradient_checkpointing", "chunk_size", "memory_estimate_gb")


def draw(space, draws: int = DRAWS) -> list[tuple[dict, dict]]:
    """``draws`` random configs of the space (seeded): per draw, the distributions it
    sampled from and the constants it returned."""
    from search_spaces.spaces import sample

    return [(distributions, constants) for _, distributions, constants in sample(space, draws)]


def dimensions(draws: list[tuple[dict, dict]]) -> dict[str, dict]:
    """Each sampled name's range over the draws: ``{"low", "high", "log", "step"}`` or
    ``{"choices"}``, plus ``"sometimes": True`` for a name only some branches sample. A
    define-by-run space's bounds may depend on earlier draws (K on the layers a memory budget
    affords), so the range shown is the union of what was drawn."""
    seen: dict[str, dict] = {}
    counts: dict[str, int] = {}
    for distributions, _ in draws:
        for name, dist in distributions.items():
            counts[name] = counts.get(name, 0) + 1
            _merge(seen.setdefault(name, {}), dist)
    for name, count in counts.items():
        if count < len(draws):
            seen[name]["sometimes"] = True
    return seen


def varying(draws: list[tuple[dict, dict]]) -> set[str]:
    """Returned constants that differ between draws (a per-trial memory plan)."""
    first = draws[0][1] if draws else {}
    return {k for _, c in draws for k in c if c.get(k) != first.get(k) or k not in first}


def memory_plans(draws: list[tuple[dict, dict]]) -> dict[str, int]:
    """How often each memory plan came up in the draws: "fp32", "bf16 + checkpointing",
    "fp32 + chunks of 8", ..."""
    plans: dict[str, int] = {}
    for _, c in draws:
        label = str(c.get("precision", "fp32"))
        if c.get("gradient_checkpointing"):
            label += " + checkpointing"
        if c.get("chunk_size"):
            label += f" + chunks of {c['chunk_size']}"
        plans[label] = plans.get(label, 0) + 1
    return dict(sorted(plans.items(), key=lambda item: -item[1]))


def _merge(into: dict, dist) -> None:
    if hasattr(dist, "choices"):
        into.setdefault("choices", [])
        into["choices"] += [c for c in dist.choices if c not in into["choices"]]
        return
    into["low"] = min(into.get("low", dist.low), dist.low)
    into["high"] = max(into.get("high", dist.high), dist.high)
    into["log"], into["step"] = dist.log, dist.step


def number(value) -> str:
    """A float as a person reads it (1e-06 -> 1e-6, 0.30000000000000004 -> 0.3)."""
    if isinstance(value, float):
        text = f"{value:.3g}"
        return text.replace("e-0", "e-").replace("e+0", "e+")
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)


def range_text(dim: dict) -> str:
    if "choices" in dim:
        text = " | ".join(number(c) for c in dim["choices"])
    else:
        text = f"{number(dim['low'])} .. {number(dim['high'])}"
        if dim.get("log"):
            text += ", log scale"
        if dim.get("step") not in (None, 1):
            text += f", step {number(dim['step'])}"
    return text + (" (only in some configs)" if dim.get("sometimes") else "")


def bound_keywords(space) -> dict:
    """The keywords ``search_spaces.bounded`` fixed on the space (k_max, memory, ...)."""
    inner = getattr(space, "space", space)
    return dict(inner.keywords) if isinstance(inner, functools.partial) else {}


def plan(settings, space, splits, constants: dict, disk=None, trial_time: str | None = None):
    """The plan as a dict (``--dry-run --json``); ``lines(plan)`` renders it."""
    draws = draw(space)
    dims, keywords = dimensions(draws), bound_keywords(space)
    auto = "memory" in keywords
    hidden = {"cache_dir", "data_dir", *varying(draws), *(MEMORY_PLAN if auto else ())}
    shown = {k: v for k, v in constants.items() if k not in hidden}
    return {
        "name": settings.name,
        "dataset": settings.dataset,
        "dialogues": {s: len(getattr(splits, s)) for s in ("train", "dev", "test")},
        "modalities": list(splits.modalities),
        "space": getattr(space, "__name__", str(settings.space)),
        "dimensions": dims,
        "constants": shown,
        "metric": settings.metric,
        "mode": settings.mode,
        "sampler": settings.sampler,
        "seed": settings.seed,
        # random draws at random throughout, bohb by its own rule: only tpe and gp start so
        "startup_trials": settings.startup_trials if settings.sampler in ("tpe", "gp") else None,
        "scheduler": settings.scheduler,
        "grace_period": settings.grace_period,
        "reduction_factor": settings.reduction_factor,
        "brackets": settings.brackets,
        "tie_metric": settings.tie_metric,
        "trials": settings.trials,
        "budget": settings.budget,
        "epochs": settings.max_t(constants),
        "run_steps": keywords.get("run_steps"),
        "cpus_per_trial": settings.cpus_per_trial,
        "max_concurrent": settings.max_concurrent,
        "gpu_memory_gb": settings.gpu_memory_gb,
        "k_max": keywords.get("k_max"),
        "memory_auto": auto,
        "memory_plans": memory_plans(draws) if auto else {},
        "trial_time": trial_time,
        "disk": disk.to_dict() if disk is not None else None,
        "disk_lines": disk.lines() if disk is not None else [],
        "storage": settings.storage,
        "tracking_uri": resolve_tracking_uri(settings.tracking_uri),
    }


def lines(p: dict) -> list[str]:
    """The plan, one labelled line (wrapped under its label) per fact."""
    out = [f"search {p['name']} (dry run: nothing was started)"]

    def row(label: str, text: str) -> None:
        wrapped = textwrap.wrap(
            text,
            WIDTH,
            initial_indent=f"  {label:<{LABEL - 2}}",
            subsequent_indent=" " * LABEL,
            break_on_hyphens=False,
        )
        out.extend(wrapped)

    d = p["dialogues"]
    row(
        "data",
        f"{p['dataset']}: {d['train']:,} train / {d['dev']:,} dev / {d['test']:,} test "
        f"dialogues, modalities {'+'.join(p['modalities'])}",
    )
    row("space", f"{p['space'].split('(')[0]}, {len(p['dimensions'])} dimensions sampled:")
    width = max((len(n) for n in p["dimensions"]), default=0) + 2
    for name, dim in p["dimensions"].items():
        text = range_text(dim)
        if name == "warmup_steps" and p["run_steps"]:
            text += f" (at most half of a full trial's {p['run_steps']:,} optimizer steps)"
        row("", f"{name:<{width}}{text}")
    fixed = ", ".join(f"{k} {number(v)}" for k, v in p["constants"].items())
    row("fixed", fixed or "nothing")
    strategy = f"{p['sampler']} sampling, seed {p['seed']}"
    if p["startup_trials"]:
        strategy += f" ({p['startup_trials']} random configs first)"
    if p["sampler"] == "bohb":
        strategy += " (TPE on the highest rung with enough scores, a third at random)"
    if p["scheduler"] == "asha":
        strategy += (
            f"; ASHA stops weak trials: every trial gets {_epochs(p['grace_period'])}, then 1 in "
            f"{number(p['reduction_factor'])} goes on at each rung (ties by {p['tie_metric']})"
        )
        if p.get("brackets", 1) > 1:  # a plan saved before brackets has none
            strategy += f"; {p['brackets']} brackets (grace x rf^0..{p['brackets'] - 1})"
    else:
        strategy += "; every trial runs all its epochs"
    row("strategy", strategy)
    if p["budget"] is not None:
        length = f"configs until {p['budget']:,} trial-epochs are spent, each up to {p['epochs']}"
    else:
        length = (
            f"{p['trials']} trials of up to {p['epochs']} epochs "
            f"(at most {p['trials'] * p['epochs']:,} trial-epochs)"
        )
    row("length", length)
    row("goal", f"{'maximise' if p['mode'] == 'max' else 'minimise'} {p['metric']} on dev")
    at_once = p["max_concurrent"] or "as many as the CPUs/GPUs allow"
    row("per trial", f"{number(p['cpus_per_trial'])} CPU(s), {p['gpu_memory_gb']:g} GB GPU memory "
        f"budget; trials at once: {at_once}")  # fmt: skip
    if p["k_max"] is not None:
        memory = f"K up to {p['k_max']} fits {p['gpu_memory_gb']:g} GB (estimated)"
        if p["memory_auto"]:
            seen = ", ".join(f"{label} {n}" for label, n in p["memory_plans"].items())
            memory += (
                "; each trial gets the cheapest precision, gradient checkpointing and "
                f"chunking that fit it, recorded in its params (in {DRAWS} draws: {seen})"
            )
        row("memory", memory)
    if p["trial_time"]:
        row("time", p["trial_time"])
    for line in p["disk_lines"]:
        row("disk", line.removeprefix("checkpoints: "))
    row("records", f"checkpoints under {p['storage']}")
    row("", f"MLflow at {p['tracking_uri']}")
    return out


def _epochs(n: int) -> str:
    return f"{n} epoch" if n == 1 else f"{n} epochs"
