"""LivePeak counts each storage from the op that creates it until it is freed."""

import torch

from bench.memory_peak import LivePeak


def test_live_peak_counts_storages_while_alive():
    with LivePeak() as tracker:
        a = torch.ones(1000)  # 4000 B
        b = a * 2  # 4000 B more: 8000 live
        del a, b  # both freed
        c = torch.zeros(500)  # 2000 B: below the peak
        view = c[:10]  # a view shares c's storage: nothing new
    assert tracker.peak == 8000
    assert tracker.now == 2000
    del c, view
    assert tracker.now == 0


def test_live_peak_starts_from_the_tensors_it_is_given():
    weights = torch.ones(250)  # 1000 B, alive before the step
    with LivePeak([weights, weights]) as tracker:  # counted once
        out = weights + 1
    assert tracker.peak == 2000
    del out
