"""Request and response bodies of the training-run routes.

A run's body is one shape per run type, told apart by ``type`` (:class:`RunCreate`);
its ``config`` is that type's run config from :mod:`charter.core.run_configs`, so a
typo or an out-of-range value is a 422 naming ``body.config.<field>`` at submission,
not a failed run later.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    RootModel,
    ValidationError,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from charter.core.jobs import RunStatus
from charter.core.run_configs import (
    RUN_CONFIGS,
    ClassifierConfig,
    DPOConfig,
    GRPOConfig,
    PMConfig,
    PPOConfig,
    RLOOConfig,
    RunType,
    SFTConfig,
)
from charter.errors import Invalid

__all__ = ["RunType"]  # re-exported: the gateway's run types are the core's

# Which dataset kind each run type trains on (the RL runs read prompts from either kind).
DATASET_KINDS: dict[str, tuple[str, ...]] = {
    "sft": ("sft",),
    "pm": ("preference",),
    "dpo": ("preference",),
    "ppo": ("sft", "preference"),
    "rloo": ("sft", "preference"),
    "grpo": ("sft", "preference"),
    "classifier": ("classifier",),
}
MODEL_PATTERN = r"^(run:[0-9a-f]{32}|[A-Za-z0-9._/-]{1,128})$"
HASH_PATTERN = r"^[0-9a-f]{16}$"
_CONFIG = (
    "The {type} run's hyper-parameters; what is left out takes its default, and the run "
    "stores them all. It may not set the fields beside config or dataset_version_id "
    "(422 naming config.<key>)."
)


class _RunBody(BaseModel):
    """What every run names: its type, the data it trains on and the model it starts from."""

    model_config = ConfigDict(extra="forbid")
    type: RunType
    dataset: str = Field(min_length=1, max_length=160, description="Dataset name or name@version.")
    base_model: str = Field(
        pattern=MODEL_PATTERN,
        description="A model name the trainer serves (e.g. smollm2) or run:<id> of a finished run.",
    )


class SFTRunCreate(_RunBody):
    """A supervised fine-tuning run on an SFT dataset."""

    type: Literal["sft"]
    config: SFTConfig = Field(default_factory=SFTConfig, description=_CONFIG.format(type="sft"))


class PMRunCreate(_RunBody):
    """A preference-model run on a preference dataset."""

    type: Literal["pm"]
    config: PMConfig = Field(default_factory=PMConfig, description=_CONFIG.format(type="pm"))


class DPORunCreate(_RunBody):
    """A DPO run on a preference dataset."""

    type: Literal["dpo"]
    config: DPOConfig = Field(default_factory=DPOConfig, description=_CONFIG.format(type="dpo"))


class _RewardedRunBody(_RunBody):
    """A run that samples its own responses and is rewarded by a finished PM run."""

    reward_run: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f]{32}$",
        description="Required: the completed PM run to optimise.",
    )


class PPORunCreate(_RewardedRunBody):
    """A PPO run against a completed PM run, on the prompts of an SFT or preference dataset."""

    type: Literal["ppo"]
    reference_model: str | None = Field(
        default=None, pattern=MODEL_PATTERN, description="The KL reference; default base_model."
    )
    config: PPOConfig = Field(default_factory=PPOConfig, description=_CONFIG.format(type="ppo"))


class RLOORunCreate(_RewardedRunBody):
    """An RLOO run (TRL) against a completed PM run, on the prompts of an SFT or preference
    dataset; the KL reference is base_model."""

    type: Literal["rloo"]
    config: RLOOConfig = Field(default_factory=RLOOConfig, description=_CONFIG.format(type="rloo"))


class GRPORunCreate(_RewardedRunBody):
    """A GRPO run (TRL) against a completed PM run, on the prompts of an SFT or preference
    dataset; the KL reference is base_model."""

    type: Literal["grpo"]
    config: GRPOConfig = Field(default_factory=GRPOConfig, description=_CONFIG.format(type="grpo"))


class ClassifierRunCreate(_RunBody):
    """A constitutional classifier run on a classifier dataset: base_model gets a fresh
    classification head, one score per restricted category."""

    type: Literal["classifier"]
    config: ClassifierConfig = Field(
        default_factory=ClassifierConfig, description=_CONFIG.format(type="classifier")
    )


RunSpec = (
    SFTRunCreate
    | PMRunCreate
    | DPORunCreate
    | PPORunCreate
    | RLOORunCreate
    | GRPORunCreate
    | ClassifierRunCreate
)
"""A validated run body (:attr:`RunCreate.root`)."""
RewardedRunSpec = PPORunCreate | RLOORunCreate | GRPORunCreate
"""The run bodies with a ``reward_run``."""

_BODIES: dict[str, type[_RunBody]] = {
    "sft": SFTRunCreate,
    "pm": PMRunCreate,
    "dpo": DPORunCreate,
    "ppo": PPORunCreate,
    "rloo": RLOORunCreate,
    "grpo": GRPORunCreate,
    "classifier": ClassifierRunCreate,
}
_COMMON = frozenset(_RunBody.model_fields) | {"config"}
EXTRA_FIELDS: dict[str, frozenset[str]] = {
    kind: frozenset(body.model_fields) - _COMMON for kind, body in _BODIES.items()
}
"""The fields each run type has beside the common ones (PPO: reward_run, reference_model)."""
PROVENANCE = (
    frozenset().union(*EXTRA_FIELDS.values()) | _COMMON - {"config"} | {"dataset_version_id"}
)
"""What a run trains on, from its validated fields only: keys ``config`` may not set."""


class RunCreate(RootModel[Annotated[RunSpec, Field(discriminator="type")]]):
    """A training run to queue: the body of its ``type`` (sft, pm, dpo, ppo, rloo, grpo or
    classifier)."""

    @model_validator(mode="wrap")
    @classmethod
    def _checked(cls, value: Any, handler: ModelWrapValidatorHandler[RunCreate]) -> RunCreate:
        if isinstance(value, dict):
            _refuse_misplaced(value)
        try:
            return handler(value)
        except ValidationError as exc:
            raise _untagged(exc, value) from None


def _refuse_misplaced(body: dict[str, Any]) -> None:
    """Keys in the wrong place, refused with why (``Invalid``, which passes through
    validation to the error renderer): the provenance rule, then fields of another type."""
    config = body.get("config")
    if isinstance(config, dict):
        clash = sorted(PROVENANCE & config.keys())
        if clash:
            raise Invalid(
                f"config may not set {', '.join(clash)}: what a run trains on is given by its "
                "validated fields beside config, never overridden inside it",
                field=f"config.{clash[0]}",
            )
    kind = body.get("type")
    if isinstance(kind, str) and kind in EXTRA_FIELDS:
        foreign = sorted(PROVENANCE - _COMMON - EXTRA_FIELDS[kind] - {"dataset_version_id"})
        for name in (f for f in foreign if f in body):
            owners = sorted(t for t, fields in EXTRA_FIELDS.items() if name in fields)
            raise Invalid(
                f"{name} applies to {' and '.join(owners)} runs only, not {kind}", field=name
            )


def _untagged(exc: ValidationError, body: Any) -> ValidationError:
    """``exc`` located as the body is written: without the union's tag (``pm.config.x``
    is ``config.x``); an unknown or missing ``type`` is ``type``'s error; an unknown
    config field says whose config it is not in."""
    errors: list[InitErrorDetails] = []
    for error in exc.errors():
        loc, kind = error["loc"], error["type"]
        detail: InitErrorDetails = {"type": kind, "loc": loc, "input": error["input"]}
        if "ctx" in error:
            detail["ctx"] = error["ctx"]
        if kind == "union_tag_invalid":
            *others, last = (f"'{t}'" for t in RUN_CONFIGS)
            expected = f"{', '.join(others)} or {last}"
            detail = {
                "type": "literal_error",
                "loc": ("type",),
                "input": body.get("type"),
                "ctx": {"expected": expected},
            }
        elif kind == "union_tag_not_found":
            detail = {"type": "missing", "loc": ("type",), "input": body}
        elif loc and loc[0] in RUN_CONFIGS:
            detail["loc"] = loc = loc[1:]
            if kind == "extra_forbidden" and len(loc) == 2 and loc[0] == "config":
                detail["type"] = PydanticCustomError(
                    "extra_forbidden",
                    "Extra inputs are not permitted: a {run_type} run's config has no {name}",
                    {"run_type": error["loc"][0], "name": loc[1]},
                )
        errors.append(detail)
    return ValidationError.from_exception_data(exc.title, errors)


class RunOut(BaseModel):
    id: str
    type: str
    status: RunStatus
    dataset: str | None
    dataset_version_id: str | None
    config: dict[str, Any] = Field(
        description="The run's config, normalised (every field, defaults included), and what "
        "it trains on: base_model, reward_run, reference_model, dataset."
    )
    config_hash: str | None = Field(
        default=None, description="config_hash() of the config, computed at submission."
    )
    trained_config_hash: str | None = Field(
        default=None,
        description="The hash the trainer reported training with (equal to config_hash).",
    )
    artifact_uri: str | None
    checkpoint: str | None
    error: str | None
    lease_owner: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    last_metrics: dict[str, float] | None = None


class Claimed(RunOut):
    lease_token: str = Field(
        description="The secret of this lease, shown only here: every heartbeat, metrics, "
        "checkpoint, complete and fail call of the lease presents it. A later claim of the "
        "run (after the lease expired) issues a new one, and this one stops working."
    )


class ClaimRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    owner: str = Field(
        min_length=1, max_length=128, description="A label for the trainer (lease_owner)."
    )
    types: list[RunType] | None = None


class Lease(BaseModel):
    """A lease-holder call: fenced on the claim's ``lease_token``, never on ``owner``."""

    model_config = ConfigDict(extra="forbid")
    lease_token: str | None = Field(
        default=None,
        max_length=128,
        description="Required: the lease_token of the claim; 409 when it is missing, wrong, "
        "or the lease was taken over.",
    )
    owner: str | None = Field(
        default=None,
        max_length=128,
        description="Not checked (anyone can read lease_owner); accepted so that a trainer "
        "that still sends it is told about lease_token.",
    )


class MetricPoint(BaseModel):
    model_config = ConfigDict(extra="forbid")
    step: int = Field(ge=0, le=2**31 - 1)  # run_metrics.step is a 32-bit integer
    metrics: dict[str, float] = Field(max_length=64)


class MetricsReport(Lease):
    points: list[MetricPoint] = Field(min_length=1, max_length=1000)


class CheckpointReport(Lease):
    checkpoint: str = Field(
        min_length=1,
        max_length=1024,
        description="A directory inside <artifacts_dir>/runs/<run id>/: an absolute path or a "
        "file:// URI.",
    )


class CompleteReport(Lease):
    artifact_uri: str = Field(
        min_length=1,
        max_length=1024,
        description="The model directory, a file:// URI inside <artifacts_dir>/runs/<run id>/.",
    )
    config_hash: str | None = Field(
        default=None,
        pattern=HASH_PATTERN,
        description="config_hash() of the config the model was trained with; 409 unless it is "
        "the run's config_hash. Charter's trainer always sends it.",
    )


class FailReport(Lease):
    error: str = Field(min_length=1, max_length=20_000)


class MetricOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    step: int
    metrics: dict[str, float]
    created_at: datetime
