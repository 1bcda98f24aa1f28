"""Job types and their parameters: what a job asks of the workers. Pure data."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from enum import StrEnum
from typing import Literal, assert_never

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from charter.core import critique_templates, feedback_templates
from charter.core.engine import SamplingParams


class JobType(StrEnum):
    SL_CAI = "sl_cai"
    """Initial response, then N rounds of critique -> revision; the last revision is the SFT target."""
    RL_CAI = "rl_cai"
    """Two responses, a comparison principle and the A/B feedback label."""
    CRITIQUE = "critique"
    """One critique of a supplied response."""
    REVISE = "revise"
    """One critique -> revision round on a supplied response."""
    COMPARE = "compare"
    """The A/B feedback label for a supplied pair."""
    GENERATE = "generate"
    """One response per prompt from the job's model, as it is: a policy's answers to
    evaluate (or distil). No principle is drawn."""


BUILTIN_SMOLLM2 = "smollm2"
"""The model every deployment knows: SmolLM2-135M-Instruct, bundled with Charter and
prepared into ``models_dir / "smollm2"`` (see ``charter.model_store``)."""
RUN_MODEL_PREFIX = "run:"
"""``run:<id>`` names the model a completed training run made (its artifact)."""
MODEL_PATTERN = r"^(run:[0-9a-f]{32}|[A-Za-z0-9._/-]+)$"
"""A model a job names: a configured name, or ``run:<id>``."""


RUN_MODELS = "run:*"
"""In a worker's models: it loads any completed run's model on demand (never a job's model:
``MODEL_PATTERN`` refuses the ``*``)."""


def run_of_model(model: str) -> str | None:
    """The run id of a ``run:<id>`` model; None for a named model (and for ``RUN_MODELS``)."""
    if not model.startswith(RUN_MODEL_PREFIX) or model == RUN_MODELS:
        return None
    return model[len(RUN_MODEL_PREFIX) :]


def serves_any_run(models: Iterable[str]) -> bool:
    """Whether a worker that lists ``models`` serves every run's model: it lists
    ``RUN_MODELS`` or any ``run:<id>``. All of them share one queue, so a worker that
    takes it for one run gets the others' chunks too, and must load them on demand
    rather than drop them."""
    return any(m.startswith(RUN_MODEL_PREFIX) for m in models)


def serves(models: Iterable[str], model: str) -> bool:
    """Whether a worker that announced ``models`` serves a job's ``model``."""
    models = set(models)
    return model in models or (run_of_model(model) is not None and RUN_MODELS in models)


# What each job type needs and makes. Every choice made on a job type goes through one
# of these exhaustive matches (mypy checks them), so a new type cannot silently be
# handled as another.

DatasetKind = Literal["sft", "preference"]
JobInput = Literal["prompt", "response", "pair"]
PrincipleKind = Literal["critique", "comparison", "none"]


def dataset_kind(job_type: JobType) -> DatasetKind:
    """The dataset its labels feed: SFT completions or soft A/B preferences."""
    match job_type:
        case JobType.SL_CAI | JobType.CRITIQUE | JobType.REVISE | JobType.GENERATE:
            return "sft"
        case JobType.RL_CAI | JobType.COMPARE:
            return "preference"
        case _:
            assert_never(job_type)


def job_input(job_type: JobType) -> JobInput:
    """What every row of its batch must supply: a prompt, a response or an A/B pair."""
    match job_type:
        case JobType.SL_CAI | JobType.RL_CAI | JobType.GENERATE:
            return "prompt"
        case JobType.CRITIQUE | JobType.REVISE:
            return "response"
        case JobType.COMPARE:
            return "pair"
        case _:
            assert_never(job_type)


def feedback_template(
    job_type: JobType,
    params: JobParams,
    resolve: Callable[[str], feedback_templates.FeedbackTemplate] = feedback_templates.get,
) -> feedback_templates.FeedbackTemplate:
    """The feedback template its prompts were built with: the job's choice for comparisons
    (found by ``resolve``: the shipped ones, or a worker's lookup that knows the project's
    own too); the default for critique jobs, which put no comparison to a model."""
    if principle_kind(job_type) == "comparison":
        return resolve(params.feedback_template)
    return feedback_templates.CHAT


def critique_template(
    job_type: JobType,
    params: JobParams,
    resolve: Callable[[str], critique_templates.CritiqueTemplate] = critique_templates.get,
) -> critique_templates.CritiqueTemplate:
    """The critique template its prompts were built with: the job's choice for critique
    jobs; the default for comparisons, which ask for no critique."""
    if principle_kind(job_type) == "critique":
        return resolve(params.critique_template)
    return critique_templates.DEFAULT_TEMPLATE


def principle_kind(job_type: JobType) -> PrincipleKind:
    """The constitution principles it draws from."""
    match job_type:
        case JobType.SL_CAI | JobType.CRITIQUE | JobType.REVISE:
            return "critique"
        case JobType.RL_CAI | JobType.COMPARE:
            return "comparison"
        case JobType.GENERATE:
            return "none"
        case _:
            assert_never(job_type)


def in_default_datasets(job_type: JobType) -> bool:
    """Whether a dataset whose filter names no label kinds takes its labels. Not a
    policy's plain generations: they are what is evaluated, not revised training data,
    and go into a dataset only when its filter asks for them."""
    match job_type:
        case JobType.SL_CAI | JobType.CRITIQUE | JobType.REVISE | JobType.RL_CAI | JobType.COMPARE:
            return True
        case JobType.GENERATE:
            return False
        case _:
            assert_never(job_type)


class ItemState(StrEnum):
    """Where one work item is: queued, leased by a worker (running), or final."""

    QUEUED = "queued"
    RUNNING = "running"
    """Leased by a worker (until ``lease_expires_at``)."""
    DONE = "done"
    ABSTAINED = "abstained"
    """Final without a usable label (e.g. too little A/B probability mass)."""
    FAILED = "failed"
    CANCELLED = "cancelled"


ITEM_STATES: tuple[str, ...] = tuple(s.value for s in ItemState)
ACTIVE_STATES = frozenset({ItemState.QUEUED, ItemState.RUNNING})
TERMINAL_STATES = frozenset(ItemState) - ACTIVE_STATES
LABELLED_STATES = frozenset({ItemState.DONE, ItemState.ABSTAINED})
"""The final states only a lease holder writes, each with the item's label."""


class JobStatus(StrEnum):
    """A job's status, derived from its items' states (:func:`job_status`)."""

    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


FINAL_JOB_STATUSES = frozenset({JobStatus.COMPLETED, JobStatus.CANCELLED})


class RunStatus(StrEnum):
    """A training run's status."""

    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINAL_RUN_STATUSES = frozenset({RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED})


def samples(job_type: JobType, params: JobParams, *, pair_supplied: bool) -> bool:
    """Whether an item's label was produced with sampled text, so records a ``sampling_hash``.

    Critiques (and revisions) are always generated; an A/B label samples only its
    chain of thought, or the pair when the row did not supply one (``rl_cai`` on
    prompts). A compare label without chain of thought sampled nothing: its label
    records no sampling hash, although its job params hold (unused) sampling values.
    """
    match job_type:
        case JobType.SL_CAI | JobType.CRITIQUE | JobType.REVISE | JobType.GENERATE:
            return True
        case JobType.RL_CAI | JobType.COMPARE:
            return params.chain_of_thought or not pair_supplied
        case _:
            assert_never(job_type)


class JobParams(BaseModel):
    """Knobs of a job; every one is recorded with the labels it produced."""

    model_config = ConfigDict(extra="forbid")
    rounds: int = Field(
        default=1, ge=1, le=4, description="Critique/revision rounds (paper: up to 4)."
    )
    chain_of_thought: bool = Field(default=False, description="Reason before the A/B answer.")
    swap: bool = Field(
        default=True, description="Score both orders and average (position debiasing)."
    )
    cot_band: tuple[float, float] = Field(
        default=(0.4, 0.6), description="Chain-of-thought labels are clamped into this band."
    )
    min_choice_mass: float = Field(
        default=0.5, ge=0.0, le=1.0, description="Abstain when P(A)+P(B) is below this."
    )
    few_shot: bool = Field(default=True, description="Show the constitution's worked examples.")
    feedback_template: str = Field(
        default=feedback_templates.DEFAULT,
        max_length=40,
        description=(
            "How comparisons are put to the feedback model: a shipped template ("
            + "; ".join(
                f"'{t.name}': {t.description}" for t in feedback_templates.BUILT_IN.values()
            )
            + "), or one of the project's own (POST /v1/templates) as 'name' (its latest "
            "version, pinned at submission) or 'name@version'."
        ),
    )
    critique_template: str = Field(
        default=critique_templates.DEFAULT,
        max_length=40,
        description=(
            "How SL-CAI asks for critiques and revisions: a shipped template ("
            + "; ".join(
                f"'{t.name}': {t.description}" for t in critique_templates.BUILT_IN.values()
            )
            + "), or one of the project's own (POST /v1/critique-templates) as 'name' or "
            "'name@version' (pinned at submission)."
        ),
    )
    principle: str | None = Field(
        default=None,
        max_length=64,
        description=(
            "Comparison jobs: judge under this one comparison principle (its id) instead of "
            "one drawn at random per item."
        ),
    )
    neutralise: bool = Field(
        default=True,
        description=(
            "Break control tokens and template delimiters in untrusted text. Only a judge "
            "evaluation turns it off, to measure what the defence is worth (POST /v1/evals)."
        ),
    )
    system_prompt: Literal["default", "constitution"] = Field(
        default="default",
        description=(
            "Generate jobs: the policy's system prompt. 'default' is Charter's helpful, "
            "honest and harmless assistant; 'constitution' adds the constitution's "
            "description and comparison principles, as the guidance to follow (the baseline "
            "the paper left out: a model told its constitution, without training on it)."
        ),
    )
    sampling: SamplingParams = Field(default_factory=SamplingParams)

    @field_validator("feedback_template", "critique_template")
    @classmethod
    def _template_ref(cls, ref: str) -> str:
        if ref not in feedback_templates.BUILT_IN and ref not in critique_templates.BUILT_IN:
            feedback_templates.parse_ref(ref)  # whether it exists is the gateway's to check
        return ref

    @model_validator(mode="after")
    def _band(self) -> JobParams:
        low, high = self.cot_band
        if not 0.0 <= low <= 0.5 <= high <= 1.0:
            raise ValueError("cot_band must satisfy 0 <= low <= 0.5 <= high <= 1")
        return self


def job_status(counts: dict[str, int], cancelled: bool) -> JobStatus:
    """A job's status derived from its items' states."""
    total = sum(counts.values())
    if cancelled:
        return JobStatus.CANCELLED
    if total and sum(counts.get(s, 0) for s in TERMINAL_STATES) == total:
        return JobStatus.COMPLETED
    if counts.get(ItemState.RUNNING, 0) or any(counts.get(s, 0) for s in TERMINAL_STATES):
        return JobStatus.RUNNING
    return JobStatus.QUEUED
