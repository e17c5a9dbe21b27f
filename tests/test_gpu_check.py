"""bench/gpu_check.py on CPU: bisection, the tables, the share check, the dry run's estimates,
the no-CUDA exit, and whole runs with every CUDA call replaced by a fake measurement."""

from __future__ import annotations

import json
import math
import re
import runpy
import sys

import pytest
import torch

from bench import gpu_check
from bench.gpu_check import FAST, SETTINGS, at, bisect_largest, build_profile, check_share
from search_spaces.budget import K_CEILING, MELD_TOKENS, estimate_gb, largest_k, sequence_length

REPO = gpu_check.Path(gpu_check.__file__).resolve().parents[1]
PROFILE = build_profile("iemocap", None, 16, 512, 4)  # the script's defaults
H100_GB = 79.2  # what an 80 GB H100 reports, in GiB


def test_profiles_and_settings_match_the_measured_shapes():
    # IEMOCAP-like: a K = 56 window's indi-context (28 turns of 16 tokens) is not cut at 512.
    assert sequence_length(56, PROFILE) == 3 + 16 * 29 < PROFILE.max_length
    assert (PROFILE.modalities, PROFILE.turns, PROFILE.valid_turns) == (3, 64, 64)
    meld = build_profile("meld", None, 16, 256, 4)
    assert (meld.modalities, meld.turns, meld.tokens) == (2, 24, MELD_TOKENS)
    chosen = [(p.precision, p.gradient_checkpointing, p.chunk_size)
              for p in (at(PROFILE, s, 8) for s in SETTINGS)]  # fmt: skip
    assert chosen == [("fp32", False, 0), ("bf16", False, 0), ("bf16", True, 0), ("bf16", True, 8)]
    config = gpu_check.model_config(at(PROFILE, FAST, 8), 56)
    assert (config.k, config.modalities, config.chunk_size, config.max_length) == (
        56, ("u", "a", "v"), 8, 512
    )  # fmt: skip


def test_synthetic_batch_has_the_profiles_shape():
    batch = gpu_check.synthetic_batch(PROFILE, 56, torch.device("cpu"))
    shapes = {name: tuple(t.shape) for name, t in batch.items()}
    assert shapes == {
        "input_ids": (4, 64, 467), "attention_mask": (4, 64, 467),
        "token_type_ids": (4, 64, 467), "turn_mask": (4, 64), "labels": (4, 64),
        "audio": (4, 64, 100), "visual": (4, 64, 512),
    }  # fmt: skip
    assert batch["turn_mask"].all() and batch["input_ids"].max() < gpu_check.VOCAB


@pytest.mark.parametrize("boundary", [0, 1, 13, 31, 32, 56, K_CEILING - 1])
def test_bisection_finds_the_last_k_that_fits(boundary):
    probes = []

    def fits(k):
        probes.append(k)
        return k <= boundary

    assert bisect_largest(fits) == boundary
    assert len(probes) <= 2 + math.ceil(math.log2(K_CEILING))  # each probe is a training run


def test_bisection_when_nothing_or_everything_fits():
    probes = []
    assert bisect_largest(lambda k: probes.append(k) or False) is None
    assert probes == [0]  # K = 0 does not fit: nothing else is tried
    probes.clear()
    assert bisect_largest(lambda k: probes.append(k) or True) == K_CEILING
    assert probes == [0, K_CEILING]
    assert bisect_largest(lambda k: k <= 7, low=5, high=9) == 7


def test_peak_table_compares_estimate_with_measured():
    rows = [
        {"k": 14, "setting": "fp32", "estimate_gb": 35.53, "allocated_gb": 30.0,
         "reserved_gb": 32.0, "oom": False},
        {"k": 56, "setting": "bf16", "estimate_gb": 163.58, "allocated_gb": 78.5,
         "reserved_gb": 79.0, "oom": True},
        {"k": 56, "setting": "bf16+ckpt+chunks", "estimate_gb": 9.0, "allocated_gb": 9.5,
         "reserved_gb": 10.0, "oom": False},
        {"k": 28, "setting": "bf16+ckpt", "estimate_gb": 12.33},  # a dry run: no measurement
    ]  # fmt: skip
    lines = gpu_check.peak_table(rows).splitlines()
    assert lines[1].split() == ["14", "fp32", "35.53", "30.00", "32.00", "1.11"]
    assert lines[2].split() == ["56", "bf16", "163.58", "OOM", "OOM", "-"]
    assert lines[3].split() == [
        "56", "bf16+ckpt+chunks", "9.00", "9.50", "10.00", "0.90", "estimate", "low"
    ]  # fmt: skip
    assert lines[4].split() == ["28", "bf16+ckpt", "12.33", "-", "-", "-"]


def test_throughput_ratio():
    assert gpu_check.throughput_ratio({"utt_per_s": 100.0}, {"utt_per_s": 250.0}) == 2.5
    assert gpu_check.throughput_ratio({"utt_per_s": None, "oom": True}, {"utt_per_s": 9.0}) is None


def workers(n, reserved, context, card=H100_GB, held=0.25):
    """Reports of n workers, with the card's free memory their allocators and contexts leave."""
    free = card - n * (held + context)
    return [
        {"rank": r, "allocated_gb": reserved - 0.5, "reserved_gb": reserved, "oom": False,
         "held_gb": held, "free_end_gb": free}
        for r in range(n)
    ]  # fmt: skip


def test_share_check_passes_trials_within_their_share():
    result = check_share(workers(6, reserved=10.9, context=0.5), 11, H100_GB)
    assert result["ok"], result["problems"]
    assert result["context_gb"] == pytest.approx(0.5)
    assert result["trials_that_fit"] == result["gpu_share_trials"] == 6


def test_share_check_flags_a_worker_over_its_share():
    reports = workers(6, reserved=10.9, context=0.5)
    reports[3]["reserved_gb"] = 11.4  # its cap did not hold
    result = check_share(reports, 11, H100_GB)
    assert not result["ok"]
    assert result["problems"] == ["worker 3: its allocator held 11.40 GB, over its 11 GB share"]


def test_share_check_counts_contexts_outside_the_allocators():
    # 7 x 11 GB fit 79.2 GB, but not with 7 contexts of 0.6 GB, though this run's peaks did.
    result = check_share(workers(7, reserved=10.0, context=0.6), 11, H100_GB)
    assert result["context_gb"] == pytest.approx(0.6)
    assert result["problems"] == [
        "7 x (11 GB + 0.60 GB context) = 81.2 GB > the card's 79.2 GB: 6 fit"
    ]
    # A context larger than gpu_share assumes makes it pack more trials than fit.
    result = check_share(workers(5, reserved=10.0, context=2.5, card=80.0), 11, 80.0)
    assert result["problems"] == [
        "gpu_share packs 6 trials on this card, but with the measured context "
        "(2.50 GB; CUDA_CONTEXT_GB = 0.5) only 5 fit"
    ]


def test_share_check_reports_errors_and_oom_without_context():
    reports = [{"rank": 0, "error": "BrokenBarrierError"},
               {"rank": 1, "oom": True, "oom_message": "CUDA out of memory", "reserved_gb": 11.0}]  # fmt: skip
    result = check_share(reports, 11, 80.0)
    assert result["problems"] == [
        "worker 0: BrokenBarrierError",
        "worker 1: out of memory (CUDA out of memory)",
    ]
    assert result["context_gb"] is None and not result["ok"]


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
