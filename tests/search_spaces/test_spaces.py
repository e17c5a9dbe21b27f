"""Every space samples valid, in-range configs, deterministically under a seeded sampler."""

from __future__ import annotations

import functools
import json
import re
from dataclasses import fields

import optuna
import pytest

from search_spaces import SEARCH_PRESETS, SPACES, bounded, describe, get_space, search_preset
from search_spaces.custom import Float, Int, space_from_dict, space_from_ranges
from trainable.config import DialogueTRMConfig
from trainable.datasets import DATASETS

TRAIN_KEYS = {"lr", "warmup_steps", "epochs", "batch_size", "weight_decay", "max_grad_norm", "seed"}
RUN_KEYS = {"dataset", "data_dir", "max_dialogues", "memory", "memory_estimate_gb"}
MODEL_KEYS = {f.name for f in fields(DialogueTRMConfig)}
VALID_KEYS = MODEL_KEYS | TRAIN_KEYS | RUN_KEYS

optuna.logging.set_verbosity(optuna.logging.WARNING)


def draw(space, n=20, seed=0, sampler=None):
    sampler = sampler or optuna.samplers.RandomSampler(seed=seed)
    study = optuna.create_study(sampler=sampler)
    configs = []
    for _ in range(n):
        trial = study.ask()
        constants = space(trial) or {}
        config = {**trial.params, **constants}  # the flat config a trial gets
        study.tell(trial, float(len(configs) % 3))
        configs.append(config)
    return configs


@pytest.mark.parametrize("name", sorted(SPACES))
def test_space_keys_are_config_fields(name):
    for config in draw(SPACES[name]):
        assert set(config) <= VALID_KEYS, set(config) - VALID_KEYS


@pytest.mark.parametrize("name", sorted(SPACES))
def test_space_values_build_valid_configs(name):
    for config in draw(SPACES[name]):
        model = {k: v for k, v in config.items() if k in MODEL_KEYS}
        DialogueTRMConfig(**model)  # raises on an invalid combination (e.g. heads vs width)
        assert config["lr"] > 0
        assert config["warmup_steps"] >= 0 and config["k"] >= 1
        assert 0.0 <= config["dropout"] <= 0.3


def test_paper_ranges():
    configs = draw(SPACES["paper"], n=60)
    assert all(1e-6 <= c["lr"] <= 1e-4 for c in configs)
    assert all(c["warmup_steps"] % 100 == 0 and 0 <= c["warmup_steps"] <= 2000 for c in configs)
    assert all(1 <= c["k"] <= 14 for c in configs)
    assert all(1 <= c["intra_layers"] <= 6 and 1 <= c["inter_layers"] <= 4 for c in configs)
    # Log scale: a good share of draws lands in the lowest decade.
    assert sum(c["lr"] < 1e-5 for c in configs) > len(configs) / 4


def test_quick_ranges_and_constants():
    configs = draw(SPACES["quick"], n=40)
    assert all(3e-4 <= c["lr"] <= 1e-2 for c in configs)
    assert all(0 <= c["warmup_steps"] <= 30 and 1 <= c["k"] <= 8 for c in configs)
    assert all(c["intra_layers"] in (1, 2) and c["inter_layers"] in (1, 2) for c in configs)
    assert {c["encoder"] for c in configs} == {"tiny"}
    assert configs[0]["epochs"] == 2 and configs[0]["hidden_size"] == 64


@pytest.mark.parametrize("name", sorted(SPACES))
def test_seeded_sampler_is_deterministic(name):
    a = draw(SPACES[name], n=12, sampler=optuna.samplers.TPESampler(seed=3, n_startup_trials=4))
    b = draw(SPACES[name], n=12, sampler=optuna.samplers.TPESampler(seed=3, n_startup_trials=4))
    c = draw(SPACES[name], n=12, sampler=optuna.samplers.TPESampler(seed=4, n_startup_trials=4))
    assert a == b
    assert a != c


def test_presets_refer_to_existing_spaces():
    assert set(SEARCH_PRESETS) == set(DATASETS) == {"meld", "iemocap", "avec", "synthetic"}
    for preset in SEARCH_PRESETS.values():
        assert preset.space in SPACES
        assert preset.mode == "max"  # F1 and Pearson r: higher is better
    assert search_preset("meld").metric == search_preset("iemocap").metric == "dev_weighted_f1"
    assert search_preset("avec").metric == "dev_mean_pearson"
    assert search_preset("synthetic").space == "quick" and search_preset("meld").space == "paper"


def test_unknown_dataset_preset_names_the_choices():
    message = "--dataset 'imdb' is unknown; expected one of meld, iemocap, avec, synthetic"
    with pytest.raises(ValueError, match=re.escape(message)):
        search_preset("imdb")


def test_describe_separates_sampled_and_constants():
    sampled, constants = describe(SPACES["quick"])
    assert set(sampled) == {"lr", "warmup_steps", "k", "intra_layers", "inter_layers", "dropout"}
    assert constants["encoder"] == "tiny"


def test_bounded_binds_k_from_budget_without_changing_the_space():
    from search_spaces.budget import MemoryProfile, largest_k

    space = bounded("paper", 11)
    assert isinstance(space, functools.partial) and space.func is SPACES["paper"]
    # The widest paper trial (6/4 layers) with checkpointing, the most saving fp32 setting.
    ckpt = largest_k(11, MemoryProfile(gradient_checkpointing=True))
    assert space.keywords["k_max"] == min(32, ckpt)
    small = bounded("paper", 6.5).keywords["k_max"]
    assert max(c["k"] for c in draw(bounded("paper", 6.5), n=40)) <= small < ckpt
    assert "k_max" not in bounded("paper", None).keywords  # no budget: the space's own bound
    with pytest.raises(ValueError, match="gpu-memory-gb"):
        bounded("paper", 2)


@pytest.mark.parametrize("name", ["paper", "joint", "joint-auto"])
@pytest.mark.parametrize("budget", [8, 11, 24])
def test_bounded_space_never_exceeds_the_budget(name, budget):
    from search_spaces.budget import MemoryProfile, estimate_gb

    configs = draw(bounded(name, budget), n=500)
    settings = ("precision", "gradient_checkpointing", "chunk_size")
    for c in configs:
        profile = MemoryProfile(
            batch_size=c["batch_size"],
            intra_layers=c["intra_layers"],
            inter_layers=c["inter_layers"],
            **{key: c[key] for key in settings if key in c},
        )
        assert estimate_gb(c["k"], profile) <= budget, c
    if name == "joint":  # define-by-run: fewer layers, smaller batches leave room for more K
        light = [c["k"] for c in configs if c["batch_size"] <= 2 and c["intra_layers"] <= 2]
        heavy = [c["k"] for c in configs if c["batch_size"] >= 6 and c["intra_layers"] >= 5]
        assert max(light) > max(heavy, default=0)  # at 8 GB heavy ones do not fit at all
    if name == "joint":
        assert {c["precision"] for c in configs} <= {"fp32", "bf16"}
    else:  # memory=auto: every trial records its choice, and the cheapest one varies
        assert {c["memory"] for c in configs} == {"auto"}
        if name == "joint-auto" or budget <= 11:  # 24 GB fit every paper trial in plain fp32
            assert len({tuple(c[key] for key in settings) for c in configs}) > 1


def test_memory_auto_reaches_the_trial_config():
    from trainable.tune_trainable import split_config

    config = draw(bounded("joint-auto", 11), n=1)[0]
    model, _, run = split_config(config)
    assert run["memory"] == "auto"
    assert model.gradient_checkpointing == config["gradient_checkpointing"]
    assert model.precision == config["precision"] and model.chunk_size == config["chunk_size"]
    with pytest.raises(ValueError, match="memory=auto needs"):
        split_config({"memory": "auto", "k": 2})
    with pytest.raises(ValueError, match="memory must be one of"):
        split_config({"memory": "sometimes"})


@pytest.mark.parametrize(
    "low, high, message",
    [
        (0.0, 1e-3, "lr: low must be > 0"),
        (-1e-4, 1e-3, "lr: low must be > 0"),
        (1e-3, 1e-3, "lr: low .* must be < high"),
        (1e-2, 1e-3, "lr: low .* must be < high"),
    ],
)
def test_custom_space_rejects_bad_lr_bounds(low, high, message):
    with pytest.raises(ValueError, match=message):
        space_from_ranges({"lr": Float(low, high, log=True)})
    with pytest.raises(ValueError, match=message):
        space_from_dict({"ranges": {"lr": {"low": low, "high": high}}})


def test_custom_space_from_file(tmp_path):
    spec = {
        "ranges": {
            "lr": {"low": 1e-4, "high": 1e-2, "log": True},
            "k": {"low": 1, "high": 4},
            "fusion": {"choices": ["mgif", "concat"]},
        },
        "constants": {"encoder": "tiny", "epochs": 1},
    }
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(spec))
    space = get_space(str(path))
    for config in draw(space, n=10):
        assert isinstance(config["k"], int) and 1 <= config["k"] <= 4
        assert config["fusion"] in ("mgif", "concat") and config["encoder"] == "tiny"
    toml = tmp_path / "mine.toml"
    toml.write_text("[ranges]\nk = { low = 3, high = 2 }\n")
    with pytest.raises(ValueError, match="k: low"):
        get_space(str(toml))


def test_custom_space_rejects_keys_both_sampled_and_constant():
    with pytest.raises(ValueError, match="k: both sampled and constant"):
        space_from_ranges({"k": Int(1, 3)}, {"k": 2})


def test_unknown_space_names_the_choices():
    with pytest.raises(ValueError, match="paper"):
        get_space("nope")
    assert get_space("search_spaces.spaces:quick") is SPACES["quick"]


def test_search_spaces_import_nothing_heavy():
    # The CLI imports search_spaces for --help and validation; the presets read trainable's
    # registry and metric_mode, which must not drag in torch or the data libraries.
    import subprocess
    import sys

    heavy = {"ray", "mlflow", "torch", "transformers", "datasets", "pandas", "sklearn"}
    code = f"import sys, search_spaces; print(sorted({heavy!r} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_bounds_follow_the_encoder_the_fidelity_and_the_modalities():
    from search_spaces.spaces import LR_RANGES

    def ranges(**kwargs):
        configs = draw(bounded("paper", 11, **kwargs), n=40)
        return min(c["lr"] for c in configs), max(c["lr"] for c in configs), configs

    for kwargs, kind in (
        ({}, "finetune"),  # bert-base-uncased, the space's own encoder
        ({"encoder": "minilm"}, "finetune"),
        ({"encoder": "tiny"}, "scratch"),
        ({"encoder": "minilm", "frozen": True}, "frozen"),
    ):
        low, high, _ = ranges(**kwargs)
        assert LR_RANGES[kind][0] <= low and high <= LR_RANGES[kind][1], kwargs
    _, _, text_only = ranges(modalities=("u",))
    assert not any("inter_layers" in c for c in text_only)  # no fusion: a dead dimension
    _, _, multi = ranges(modalities=("u", "a"))
    assert all("inter_layers" in c for c in multi)
    # A smaller encoder leaves more memory for context. With chunked encoding whatever fits
    # K = 1 reaches the ceiling, so the difference is the budget: in 3.5 GB BERT-base's
    # weights, gradients and AdamW state leave no room at all, MiniLM's do.
    assert bounded("paper", 3.5, encoder="minilm").keywords["k_max"] == 32  # the ceiling
    with pytest.raises(ValueError, match="gpu-memory-gb"):
        bounded("paper", 3.5)


def sampled_highs(space) -> tuple[dict, dict]:
    """The constants a space returns and the upper bound of each dimension it samples."""
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
    constants = space(trial)
    return constants, {name: d.high for name, d in trial.distributions.items()}


def test_the_quick_budget_is_the_quick_space_at_its_widest():
    """``BUDGETS["quick"]`` and ``WIDEST`` restate quick()'s model and layer ranges for the
    memory estimate: they must agree, at the most layers and the largest K quick() samples
    (the trial a K bound must fit); ``WIDEST["paper"]`` likewise with paper()'s layers."""
    from search_spaces.budget import MemoryProfile
    from search_spaces.spaces import BUDGETS, WIDEST, paper, quick

    constants, high = sampled_highs(quick)
    profile, ceiling = BUDGETS["quick"]
    shared = {f.name for f in fields(MemoryProfile)} & set(constants)
    assert shared == {"encoder", "hidden_size", "intra_heads", "inter_heads", "ffn_size",
                      "max_length", "batch_size"}  # fmt: skip
    assert {name: getattr(profile, name) for name in shared} == {n: constants[n] for n in shared}
    assert (profile.intra_layers, profile.inter_layers) == (
        high["intra_layers"], high["inter_layers"]
    )  # fmt: skip
    assert ceiling == high["k"]
    assert WIDEST["quick"] == (high["intra_layers"], high["inter_layers"])
    _, high = sampled_highs(paper)
    assert WIDEST["paper"] == (high["intra_layers"], high["inter_layers"])
