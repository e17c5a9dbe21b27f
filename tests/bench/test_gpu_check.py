"""bench/gpu_check.py on CPU: the model and batch it builds, the dry run's estimates, the
no-CUDA exit, and whole runs with every CUDA call replaced by a fake measurement."""

from __future__ import annotations

import json
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


def fake_gpu(monkeypatch, worker_reports):
    """Replace every CUDA call: a step measures 0.8 x the estimate and fails past the cap."""
    cap = {"fraction": 1.0}
    calls = {"fractions": [], "workers": []}

    def set_fraction(fraction, device):
        cap["fraction"] = fraction
        calls["fractions"].append(round(fraction, 4))

    def train_steps(profile, k, device, steps):
        reserved = 0.8 * estimate_gb(k, profile)
        speed = 100.0 if profile.precision == "fp32" else 250.0
        oom = reserved > cap["fraction"] * H100_GB
        return {"oom": oom, "utt_per_s": None if oom else speed, "allocated_gb": 0.9 * reserved,
                "reserved_gb": reserved}  # fmt: skip

    def run_workers(n, budget_gb, profile, k, steps):
        calls["workers"].append((n, budget_gb, profile.precision, k))
        return worker_reports(n)

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(gpu_check, "device_info", lambda device: ("Fake H100", H100_GB))
    monkeypatch.setattr(gpu_check, "set_fraction", set_fraction)
    monkeypatch.setattr(gpu_check, "train_steps", train_steps)
    monkeypatch.setattr(gpu_check, "run_workers", run_workers)
    return calls


def test_a_whole_run_reports_and_writes_json(monkeypatch, capsys, tmp_path):
    calls = fake_gpu(monkeypatch, lambda n: workers(n, reserved=10.8, context=0.45))
    assert gpu_check.main(["--all", "--json", str(tmp_path / "out.json")]) == 0
    results = json.loads((tmp_path / "out.json").read_text())
    assert results["device"] == "Fake H100" and results["card_gb"] == H100_GB
    for row in results["peak"]:
        assert row["reserved_gb"] == pytest.approx(0.8 * row["estimate_gb"])
    for row in results["reach"]:  # the last K whose fake step fits the 11 GB cap
        profile = at(PROFILE, gpu_check.BY_NAME[row["setting"]], 8)
        fits = [k for k in range(K_CEILING + 1) if 0.8 * estimate_gb(k, profile) <= 11]
        assert row["measured_k"] == (max(fits) if fits else None)
    cap = round(11 / H100_GB, 4)
    assert calls["fractions"] == [cap, 1.0]  # capped only while bisecting
    assert results["goal_met"] == (results["reach"][-1]["measured_k"] >= 56)
    assert results["throughput"]["ratio"] == 2.5
    assert calls["workers"] == [(6, 11.0, "bf16", largest_k(11, at(PROFILE, FAST, 8)))]
    assert results["share"]["ok"] and results["share"]["context_gb"] == pytest.approx(0.45)
    out = capsys.readouterr().out
    assert "ratio bf16+ckpt+chunks / fp32: 2.50" in out
    assert "6 trials sharing a 79.2 GB card" in out and "share check: ok" in out


def test_a_trial_over_its_share_fails_the_run(monkeypatch, capsys):
    def reports(n):
        out = workers(n, reserved=10.8, context=0.5)
        out[1].update(oom=True, oom_message="CUDA out of memory. Tried to allocate 2.00 GiB")
        return out

    calls = fake_gpu(monkeypatch, reports)
    assert gpu_check.main(["--share", "7", "--share-k", "20"]) == 1
    assert calls["workers"] == [(7, 11.0, "bf16", 20)]
    out = capsys.readouterr().out
    assert "PROBLEM: worker 1: out of memory (CUDA out of memory." in out
    assert "share check: FAILED" in out and "peak memory" not in out
