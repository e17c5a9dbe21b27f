"""bench/gpu_report.py, the CPU half of bench/gpu_check.py: the settings and profiles,
bisection, the peak table and throughput ratio, and judging a fractional-GPU run."""

from __future__ import annotations

import math

import pytest

from bench.gpu_report import (
    SETTINGS,
    at,
    bisect_largest,
    build_profile,
    check_share,
    peak_table,
    throughput_ratio,
)
from search_spaces.budget import K_CEILING, MELD_TOKENS, sequence_length

PROFILE = build_profile("iemocap", None, 16, 512, 4)  # gpu_check.py's defaults
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
    lines = peak_table(rows).splitlines()
    assert lines[1].split() == ["14", "fp32", "35.53", "30.00", "32.00", "1.11"]
    assert lines[2].split() == ["56", "bf16", "163.58", "OOM", "OOM", "-"]
    assert lines[3].split() == [
        "56", "bf16+ckpt+chunks", "9.00", "9.50", "10.00", "0.90", "estimate", "low"
    ]  # fmt: skip
    assert lines[4].split() == ["28", "bf16+ckpt", "12.33", "-", "-", "-"]


def test_throughput_ratio():
    assert throughput_ratio({"utt_per_s": 100.0}, {"utt_per_s": 250.0}) == 2.5
    assert throughput_ratio({"utt_per_s": None, "oom": True}, {"utt_per_s": 9.0}) is None


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
