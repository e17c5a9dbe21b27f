"""bench/gpu_check.py on CPU: the model and batch it builds, the dry run's estimates, the
no-CUDA exit, and what measure() and main() do with the answers of CUDA calls the test
controls (bisection under the budget cap, points measured, exit status)."""

from __future__ import annotations

import json
import math
import re
import runpy
import sys

import pytest
import torch

from bench import gpu_check
from bench.gpu_report import FAST, SETTINGS, at
from search_spaces.budget import K_CEILING, estimate_gb, largest_k
from tests.bench.test_gpu_report import H100_GB, PROFILE, workers

REPO = gpu_check.Path(gpu_check.__file__).resolve().parents[1]


def test_model_and_batch_have_the_profiles_shape():
    config = gpu_check.model_config(at(PROFILE, FAST, 8), 56)
    assert (config.k, config.modalities, config.chunk_size, config.max_length) == (
        56, ("u", "a", "v"), 8, 512
    )  # fmt: skip
    batch = gpu_check.synthetic_batch(PROFILE, 56, torch.device("cpu"))
    shapes = {name: tuple(t.shape) for name, t in batch.items()}
    assert shapes == {
        "input_ids": (4, 64, 467), "attention_mask": (4, 64, 467),
        "token_type_ids": (4, 64, 467), "turn_mask": (4, 64), "labels": (4, 64),
        "audio": (4, 64, 100), "visual": (4, 64, 512),
    }  # fmt: skip
    assert batch["turn_mask"].all() and batch["input_ids"].max() < gpu_check.VOCAB


def no_cuda_allowed(monkeypatch):
    for name in ("train_steps", "device_info", "set_fraction", "run_workers"):
        monkeypatch.setattr(gpu_check, name, lambda *a, n=name: pytest.fail(f"{n} called"))


def test_dry_run_prints_the_plan_with_the_models_estimates(monkeypatch, capsys):
    no_cuda_allowed(monkeypatch)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: pytest.fail("CUDA probed"))
    assert gpu_check.main(["--dry-run", "--json", "/dev/null"]) == 0
    out = capsys.readouterr().out
    printed = {
        (int(k), name): float(gb)
        for k, name, gb in re.findall(r"^ +(\d+)  (\S+) +([\d.]+) +- +- +-$", out, re.M)
    }
    expected = {
        (k, s.name): estimate_gb(k, at(PROFILE, s, 8)) for k in (14, 28, 56) for s in SETTINGS
    }
    assert printed.keys() == expected.keys()
    for point, gb in expected.items():
        assert printed[point] == pytest.approx(gb, abs=0.006), point
    fast_k = largest_k(11, at(PROFILE, FAST, 8))
    assert re.search(rf"^  bf16\+ckpt\+chunks +{fast_k} +-$", out, re.M)
    assert f"(estimate {estimate_gb(fast_k, at(PROFILE, FAST, 8)):.2f} GB)" in out  # share's K
    assert "6 trials sharing a 80.0 GB card" in out  # gpu_share(11, 80): 6 x 11.5 GB


def test_without_cuda_it_exits_with_one_line(monkeypatch, capsys):
    no_cuda_allowed(monkeypatch)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main(["--peak"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("no CUDA device: ") and captured.err.count("\n") == 1


def test_the_script_itself_exits_non_zero(monkeypatch, capsys):
    # Runs the file as ``python bench/gpu_check.py --peak`` does, in this interpreter (a new
    # one would spend seconds importing torch again).
    no_cuda_allowed(monkeypatch)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(sys, "argv", ["gpu_check.py", "--peak"])
    with pytest.raises(SystemExit) as exited:
        runpy.run_path(str(REPO / "bench" / "gpu_check.py"), run_name="__main__")
    assert exited.value.code == 2
    assert capsys.readouterr().err.startswith("no CUDA device: ")


# -- measure() and main() on CPU. Only the four CUDA calls are replaced, by functions whose
# answers the test chooses (no formula of their own): what is checked is what gpu_check does
# with the answers. The CUDA calls themselves are checked by running the script on a GPU.

SETTING_OF = {
    (p.precision, p.gradient_checkpointing, p.chunk_size): s.name
    for s, p in ((s, at(PROFILE, s, 8)) for s in SETTINGS)
}
SPEED = {"fp32": 100.0, "bf16": 150.0, "bf16+ckpt": 120.0, "bf16+ckpt+chunks": 250.0}


def controlled_gpu(monkeypatch, fits_up_to=None, worker_reports=None):
    """A step of a setting at window K runs out of memory iff K > ``fits_up_to[setting]``;
    returns the log of calls, in order: ("fraction", f), ("step", setting, K, steps, the
    fraction then), ("workers", n, budget, precision, K)."""
    state, log = {"fraction": 1.0}, []

    def set_fraction(fraction, device):
        state["fraction"] = fraction
        log.append(("fraction", fraction))

    def train_steps(profile, k, device, steps):
        name = SETTING_OF[(profile.precision, profile.gradient_checkpointing, profile.chunk_size)]
        log.append(("step", name, k, steps, state["fraction"]))
        oom = k > (fits_up_to or {}).get(name, K_CEILING)
        return {"oom": oom, "utt_per_s": None if oom else SPEED[name], "allocated_gb": 5.0,
                "reserved_gb": 6.0}  # fmt: skip

    def run_workers(n, budget_gb, profile, k, steps):
        log.append(("workers", n, budget_gb, profile.precision, k))
        return worker_reports(n)

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(gpu_check, "device_info", lambda device: ("Controlled", H100_GB))
    monkeypatch.setattr(gpu_check, "set_fraction", set_fraction)
    monkeypatch.setattr(gpu_check, "train_steps", train_steps)
    monkeypatch.setattr(gpu_check, "run_workers", run_workers)
    return log


def test_reach_bisects_each_setting_under_the_budget_cap(monkeypatch, capsys, tmp_path):
    limits = {"fp32": 9, "bf16": 17, "bf16+ckpt": 33, "bf16+ckpt+chunks": 61}
    log = controlled_gpu(monkeypatch, limits)
    assert gpu_check.main(["--reach", "--json", str(tmp_path / "out.json")]) == 0
    results = json.loads((tmp_path / "out.json").read_text())
    assert {r["setting"]: r["measured_k"] for r in results["reach"]} == limits
    assert results["goal_met"] is True
    cap = 11 / H100_GB  # the allocator fails where a trial's would: at its budget
    assert log[0] == ("fraction", cap) and log[-1] == ("fraction", 1.0)
    steps = log[1:-1]
    assert {s[0] for s in steps} == {"step"} and {s[3:] for s in steps} == {(2, cap)}
    assert len(steps) <= 4 * (2 + math.ceil(math.log2(K_CEILING)))  # bisected, not scanned
    out = capsys.readouterr().out
    assert re.search(r"^  bf16\+ckpt\+chunks +\d+ +61$", out, re.M)
    assert "goal K >= 56 in 11 GB with bf16+ckpt+chunks: met" in out


def test_reach_reports_a_missed_goal_and_a_setting_where_nothing_fits(monkeypatch, capsys):
    controlled_gpu(monkeypatch, {"fp32": -1, "bf16+ckpt+chunks": 55})
    assert gpu_check.main(["--reach"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^  fp32 +\d+ +None$", out, re.M)
    assert re.search(r"^  bf16\+ckpt\+chunks +\d+ +55$", out, re.M)
    assert "goal K >= 56 in 11 GB with bf16+ckpt+chunks: NOT met" in out


def test_peak_and_throughput_run_uncapped_at_the_planned_points(monkeypatch, capsys):
    log = controlled_gpu(monkeypatch)
    assert gpu_check.main(["--peak", "--throughput", "--ks", "14,28", "--steps", "2"]) == 0
    peak = [(s.name, k, 2, 1.0) for k in (14, 28) for s in SETTINGS]
    throughput = [("fp32", 14, 3, 1.0), ("bf16+ckpt+chunks", 14, 3, 1.0)]  # 3 steps at least
    assert log == [("step", *point) for point in peak + throughput]  # never capped
    out = capsys.readouterr().out
    assert "ratio bf16+ckpt+chunks / fp32: 2.50" in out  # 250 / 100 utt/s
    assert out.count("utt/s, reserved 6.00 GB") == 2


def test_a_trial_over_its_share_fails_the_run(monkeypatch, capsys):
    def reports(n):
        out = workers(n, reserved=10.8, context=0.5)
        out[1].update(oom=True, oom_message="CUDA out of memory. Tried to allocate 2.00 GiB")
        return out

    log = controlled_gpu(monkeypatch, worker_reports=reports)
    assert gpu_check.main(["--share", "7", "--share-k", "20"]) == 1
    assert log == [("workers", 7, 11.0, "bf16", 20)]
    out = capsys.readouterr().out
    assert "PROBLEM: worker 1: out of memory (CUDA out of memory." in out
    assert "share check: FAILED" in out and "peak memory" not in out


def test_the_whole_run_shares_first_with_what_gpu_share_packs(monkeypatch, capsys):
    log = controlled_gpu(monkeypatch, worker_reports=lambda n: workers(n, 10.8, context=0.3))
    assert gpu_check.main(["--all"]) == 0
    share_k = largest_k(11, at(PROFILE, FAST, 8))
    # First, before this process allocates on the card; N: gpu_share(11 GB, 79.2 GB) = 1/6.
    assert log[0] == ("workers", 6, 11.0, "bf16", share_k)
    assert [entry[0] for entry in log[1:]].count("workers") == 0
    assert "share check: ok" in capsys.readouterr().out
