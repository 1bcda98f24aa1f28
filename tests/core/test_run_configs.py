"""Run configs: strict, bounded fields; one hash of what affects the trained weights."""

from __future__ import annotations

import hashlib
import json
from typing import Any, get_args

import pytest
from pydantic import ValidationError

from charter.core.constitution import canonical_json
from charter.core.run_configs import (
    RUN_CONFIGS,
    ClassifierConfig,
    DPOConfig,
    GRPOConfig,
    PMConfig,
    PPOConfig,
    RLOOConfig,
    RunConfig,
    RunType,
    SFTConfig,
    TrainerArguments,
    TrainingConfig,
)

CLASSES = list(RUN_CONFIGS.values())

# run config class -> a hashed field and another valid value for it
HASHED_CHANGE: dict[type[RunConfig], tuple[str, Any]] = {
    SFTConfig: ("completion_only_loss", False),
    PMConfig: ("soft_labels", False),
    DPOConfig: ("beta", 0.5),
    PPOConfig: ("target_kl", 3.0),
    RLOOConfig: ("normalize_advantages", True),
    GRPOConfig: ("scale_rewards", "batch"),
    ClassifierConfig: ("target", "output"),
}


def test_every_run_type_has_its_config_class() -> None:
    assert set(RUN_CONFIGS) == set(get_args(RunType))
    for kind, cls in RUN_CONFIGS.items():
        assert kind == cls.METHOD
    assert all(
        issubclass(c, TrainingConfig) for c in (SFTConfig, PMConfig, DPOConfig, ClassifierConfig)
    )
    assert not issubclass(PPOConfig, TrainingConfig) and issubclass(PPOConfig, RunConfig)
    # RLOO and GRPO hold no rows out and sample their completions: no max_length, no eval.
    for online in (RLOOConfig, GRPOConfig):
        assert issubclass(online, TrainerArguments) and not issubclass(online, TrainingConfig)


@pytest.mark.parametrize("cls", CLASSES)
def test_every_field_is_described(cls: type[RunConfig]) -> None:
    properties = cls.model_json_schema()["properties"]
    assert set(properties) == set(cls.model_fields)
    undescribed = [name for name, field in properties.items() if not field.get("description")]
    assert undescribed == []


@pytest.mark.parametrize("cls", CLASSES)
def test_the_hash_covers_method_and_hashed_fields(cls: type[RunConfig]) -> None:
    config = cls()
    digest = config.config_hash()
    assert len(digest) == 16 and int(digest, 16) >= 0
    hashed = {k: v for k, v in config.as_dict().items() if k not in cls.NOT_HASHED}
    expected = canonical_json({"method": cls.METHOD, **hashed})
    assert digest == hashlib.sha256(expected.encode()).hexdigest()[:16]
    # defaults given explicitly, or read back from stored JSON, are the same config
    assert cls(**config.as_dict()).config_hash() == digest
    assert cls.from_dict(json.loads(json.dumps(config.as_dict()))) == config


@pytest.mark.parametrize("cls", CLASSES)
def test_a_hashed_field_changes_the_hash(cls: type[RunConfig]) -> None:
    name, value = HASHED_CHANGE[cls]
    assert cls(**{name: value}).config_hash() != cls().config_hash()
    assert cls(seed=7).config_hash() != cls().config_hash()


@pytest.mark.parametrize("cls", [SFTConfig, PMConfig, DPOConfig])
def test_observation_fields_are_not_hashed(cls: type[TrainingConfig]) -> None:
    observation = {"per_device_eval_batch_size", "logging_steps", "eval_steps", "save_steps"}
    assert observation == cls.NOT_HASHED
    observed = cls(per_device_eval_batch_size=2, logging_steps=1, eval_steps=5, save_steps=3)
    assert observed.config_hash() == cls().config_hash()
    assert observed != cls()  # still stored: only the hash ignores them
    # which rows are held out changes what is trained on
    assert cls(eval_fraction=0.2).config_hash() != cls().config_hash()


def test_the_classifier_threshold_is_stored_but_not_hashed() -> None:
    # The decision threshold changes no weight: it is stored with the model and read
    # by the scorer, and the held-out metrics are measured at it.
    observation = {"per_device_eval_batch_size", "logging_steps", "eval_steps", "save_steps"}
    assert observation | {"threshold"} == ClassifierConfig.NOT_HASHED
    assert ClassifierConfig(threshold=0.9).config_hash() == ClassifierConfig().config_hash()
    assert ClassifierConfig(threshold=0.9) != ClassifierConfig()
    for hashed in ({"prefix_stride": 4}, {"target": "exchange"}, {"max_length": 128}):
        assert ClassifierConfig(**hashed).config_hash() != ClassifierConfig().config_hash()


def test_classifier_defaults() -> None:
    config = ClassifierConfig()
    assert (config.target, config.prefix_stride, config.threshold) == ("input", 8, 0.5)
    assert (config.learning_rate, config.max_length) == (5e-5, 512)
    assert config.as_dict()["target"] == "input"


def test_every_ppo_field_but_the_checkpoint_cadence_is_hashed() -> None:
    # Checkpointing changes nothing a run learns (tests/trainer/test_ppo.py resumes bit
    # for bit), so a resumed run may checkpoint more often.
    assert {"save_steps"} == PPOConfig.NOT_HASHED
    assert PPOConfig(save_steps=1).config_hash() == PPOConfig().config_hash()
    assert PPOConfig(total_steps=5).config_hash() != PPOConfig().config_hash()


def test_the_method_is_part_of_the_hash() -> None:
    assert len({cls().config_hash() for cls in CLASSES}) == len(CLASSES)
    # PM and SFT with every shared field equal still differ
    shared = {"learning_rate": 1e-4, "max_length": 512}
    assert PMConfig(**shared).config_hash() != SFTConfig(**shared).config_hash()


BAD: list[tuple[type[RunConfig], dict[str, Any], str]] = [
    (PMConfig, {"learning_rate": 0.0}, "learning_rate"),
    (PMConfig, {"learning_rate": 1.5}, "learning_rate"),
    (PMConfig, {"max_steps": 0}, "max_steps"),
    (PMConfig, {"max_steps": -2}, "max_steps"),
    (PMConfig, {"num_train_epochs": 0.0}, "num_train_epochs"),
    (PMConfig, {"center_rewards_coefficient": -0.1}, "center_rewards_coefficient"),
    (PMConfig, {"eval_fraction": 1.0}, "eval_fraction"),
    (PMConfig, {"seed": -1}, "seed"),
    (SFTConfig, {"max_length": 1}, "max_length"),
    (SFTConfig, {"lr_scheduler_type": "cosine_with_min_lr"}, "lr_scheduler_type"),
    (SFTConfig, {"per_device_train_batch_size": 0}, "per_device_train_batch_size"),
    (SFTConfig, {"eval_steps": 0}, "eval_steps"),
    (DPOConfig, {"beta": 0.0}, "beta"),
    (DPOConfig, {"loss_type": "sft"}, "loss_type"),
    (PPOConfig, {"gamma": 1.5}, "gamma"),
    (PPOConfig, {"lam": -0.1}, "lam"),
    (PPOConfig, {"cliprange": 0.0}, "cliprange"),
    (PPOConfig, {"value_head_learning_rate": 0.0}, "value_head_learning_rate"),
    (PPOConfig, {"batch_size": 10, "mini_batch_size": 4}, "mini_batch_size"),
    (PPOConfig, {"batch_size": 8}, "mini_batch_size"),  # the default 16 does not divide 8
    (ClassifierConfig, {"target": "both"}, "target"),
    (ClassifierConfig, {"prefix_stride": 0}, "prefix_stride"),
    (ClassifierConfig, {"prefix_stride": 513}, "prefix_stride"),
    (ClassifierConfig, {"threshold": 0.0}, "threshold"),
    (ClassifierConfig, {"threshold": 1.0}, "threshold"),
    (ClassifierConfig, {"max_length": 1}, "max_length"),
]


@pytest.mark.parametrize(("cls", "values", "field"), BAD)
def test_out_of_range_values_are_refused_naming_the_field(
    cls: type[RunConfig], values: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        cls(**values)
    assert [e["loc"] for e in refused.value.errors()] == [(field,)]


def test_epochs_may_be_zero_when_steps_decide() -> None:
    assert PMConfig(num_train_epochs=0.0, max_steps=3).max_steps == 3
    assert PPOConfig(batch_size=8, mini_batch_size=4).num_mini_batches == 2


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"learning_rate": "1e-5"}, "learning_rate"),  # no strings for numbers
        ({"bf16": 1}, "bf16"),  # no 0/1 for booleans
        ({"max_steps": 4.0}, "max_steps"),  # no floats for integers
        ({"max_steps": True}, "max_steps"),
        ({"weight_decay": float("nan")}, "weight_decay"),
        ({"max_grad_norm": float("inf")}, "max_grad_norm"),
    ],
)
def test_json_types_are_taken_as_they_are(values: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as refused:
        SFTConfig(**values)
    assert refused.value.errors()[0]["loc"] == (field,)
    assert SFTConfig(warmup_steps=2).warmup_steps == 2.0  # an integer is a number


@pytest.mark.parametrize("cls", CLASSES)
def test_unknown_fields_are_an_error(cls: type[RunConfig]) -> None:
    with pytest.raises(ValueError, match=r"unknown \w+ fields: learning_rte"):
        cls.from_dict({"learning_rte": 1e-5})
    with pytest.raises(ValidationError, match="learning_rte"):
        cls(learning_rte=1e-5)  # type: ignore[call-arg]


def test_only_ppo_has_ppo_fields_and_only_the_others_have_eval_fraction() -> None:
    with pytest.raises(ValidationError):
        SFTConfig(batch_size=4)  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        PPOConfig(eval_fraction=0.2)  # type: ignore[call-arg]


def test_configs_are_frozen() -> None:
    config = PPOConfig()
    with pytest.raises(ValidationError):
        config.batch_size = 8  # type: ignore[misc]
    assert hash(config) == hash(PPOConfig())
