"""Response and request models of the Charter API, generated from the gateway's
OpenAPI document by datamodel-code-generator: do not edit; run
``python -m charter.cli.sdk_models`` (see charter/sdk/__init__.py for why)."""

from __future__ import annotations

# ruff: noqa
# mypy: ignore-errors

from typing import Annotated, Any, Literal
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, RootModel
from enum import StrEnum


class AttackOut(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    id: Annotated[str, Field(title="Id")]
    family: Annotated[str, Field(title="Family")]
    description: Annotated[str, Field(title="Description")]
    text: Annotated[str, Field(title="Text")]


class Outcome(StrEnum):
    succeeded = "succeeded"
    refused = "refused"
    failed = "failed"


class AuditEventOut(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    id: Annotated[int, Field(title="Id")]
    api_key_id: Annotated[str | None, Field(title="Api Key Id")]
    """
    None once the key was deleted.
    """
    key_prefix: Annotated[str, Field(title="Key Prefix")]
    """
    The prefix of the key that made the call.
    """
    method: Annotated[str, Field(title="Method")]
    route: Annotated[str, Field(title="Route")]
    """
    The route's template, e.g. /v1/jobs/{job_id}/cancel.
    """
    path: Annotated[str, Field(title="Path")]
    object_ids: Annotated[dict[str, str], Field(title="Object Ids")]
    """
    The path parameters, plus `id`: what the call created, if it did.
    """
    status_code: Annotated[int, Field(title="Status Code")]
    outcome: Annotated[Outcome, Field(title="Outcome")]
    error_code: Annotated[str | None, Field(title="Error Code")]
    error_detail: Annotated[str | None, Field(title="Error Detail")]
    request_id: Annotated[str | None, Field(title="Request Id")]
    """
    The call's X-Request-ID.
    """
    idempotency_key: Annotated[str | None, Field(title="Idempotency Key")]
    replayed: Annotated[bool, Field(title="Replayed")]
    """
    The answer replayed an earlier call's (Idempotency-Key): that call's event is the write.
    """
    created_at: Annotated[AwareDatetime, Field(title="Created At")]


class BatchOut(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    id: Annotated[str, Field(title="Id")]
    name: Annotated[str, Field(title="Name")]
    row_count: Annotated[int, Field(title="Row Count")]
    created_at: Annotated[AwareDatetime, Field(title="Created At")]


class BinOut(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    low: Annotated[float, Field(title="Low")]
    high: Annotated[float, Field(title="High")]
    count: Annotated[int, Field(title="Count")]


class ChainRound(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    round: Annotated[int, Field(title="Round")]
    principle_id: Annotated[str, Field(title="Principle Id")]
    critique_request: Annotated[str | None, Field(title="Critique Request")] = None
    critique: Annotated[str | None, Field(title="Critique")] = None
    revision_request: Annotated[str | None, Field(title="Revision Request")] = None
    revision: Annotated[str | None, Field(title="Revision")] = None


class Role(StrEnum):
    system = "system"
    user = "user"
    assistant = "assistant"


class ChatMessage(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    role: Annotated[Role, Field(title="Role")]
    content: Annotated[str, Field(max_length=32000, title="Content")]


class LeaseToken(RootModel[str]):
    root: Annotated[str, Field(max_length=128, title="Lease Token")]
    """
    Required: the lease_token of the claim; 409 when it is missing, wrong, or the lease was taken over.
    """


class Owner(RootModel[str]):
    root: Annotated[str, Field(max_length=128, title="Owner")]
    """
    Not checked (anyone can read lease_owner); accepted so that a trainer that still sends it is told about lease_token.
    """


class CheckpointReport(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    lease_token: Annotated[LeaseToken | None, Field(title="Lease Token")] = None
    """
    Required: the lease_token of the claim; 409 when it is missing, wrong, or the lease was taken over.
    """
    owner: Annotated[Owner | None, Field(title="Owner")] = None
    """
    Not checked (anyone can read lease_owner); accepted so that a trainer that still sends it is told about lease_token.
    """
    checkpoint: Annotated[str, Field(max_length=1024, min_length=1, title="Checkpoint")]
    """
    A directory inside <artifacts_dir>/runs/<run id>/: an absolute path or a file:// URI.
    """


class Type(StrEnum):
    sft = "sft"
    pm = "pm"
    dpo = "dpo"
    ppo = "ppo"
    rloo = "rloo"
    grpo = "grpo"
    classifier = "classifier"


class ClaimRequest(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    owner: Annotated[str, Field(max_length=128, min_length=1, title="Owner")]
    """
    A label for the trainer (lease_owner).
    """
    types: Annotated[list[Type] | None, Field(title="Types")] = None


class LrSchedulerType(StrEnum):
    """
    Learning-rate schedule after warm-up.
    """

    linear = "linear"
    cosine = "cosine"
    cosine_with_restarts = "cosine_with_restarts"
    polynomial = "polynomial"
    constant = "constant"
    constant_with_warmup = "constant_with_warmup"
    inverse_sqrt = "inverse_sqrt"


class SaveSteps(RootModel[int]):
    root: Annotated[int, Field(ge=1, title="Save Steps")]
    """
    Save a resumable checkpoint every this many steps (the last two are kept); null saves none (not hashed).
    """


class MaxLength(RootModel[int]):
    root: Annotated[int, Field(ge=2, title="Max Length")] = 512
    """
    Longer texts keep their last this-many tokens (the newest text of a stream, where the score is read); null keeps all.
    """


class EvalSteps(RootModel[int]):
    root: Annotated[int, Field(ge=1, title="Eval Steps")]
    """
    Evaluate on the held-out rows every this many steps; null evaluates at the end only (not hashed).
    """


class Target(StrEnum):
    """
    What the classifier reads: input (the prompt), output (the response, every prefix) or exchange (the response prefix after its prompt).
    """

    input = "input"
    output = "output"
    exchange = "exchange"


class ClassifierConfig(BaseModel):
    """
    A constitutional classifier run (Sharma et al. 2025): a causal LM with a fresh
    sequence-classification head, fine-tuned on a classifier dataset to score each
    restricted category (one sigmoid per category).

    An ``input`` classifier scores the user's prompt; an ``output`` one every
    ``prefix_stride``-th token prefix of a response, so that a stream can be stopped
    early; an ``exchange`` one the response prefix after its prompt. ``threshold`` is
    the decision stored with the model (flag when a category's score reaches it); it
    changes no weight, so it is not hashed.
    """

    model_config = ConfigDict(
        extra="allow",
    )
    learning_rate: Annotated[float | None, Field(gt=0.0, le=1.0, title="Learning Rate")] = 5e-05
    """
    Peak AdamW learning rate (a full fine-tune with a fresh head).
    """
    max_steps: Annotated[int | None, Field(ge=-1, title="Max Steps")] = -1
    """
    Optimizer steps to run (>= 1); -1 lets num_train_epochs decide.
    """
    num_train_epochs: Annotated[float | None, Field(ge=0.0, title="Num Train Epochs")] = 1.0
    """
    Passes over the training rows (> 0 unless max_steps is set); ignored when max_steps is set.
    """
    per_device_train_batch_size: Annotated[
        int | None, Field(ge=1, title="Per Device Train Batch Size")
    ] = 8
    """
    Texts (prompts or response prefixes) per device and micro-batch.
    """
    gradient_accumulation_steps: Annotated[
        int | None, Field(ge=1, title="Gradient Accumulation Steps")
    ] = 1
    """
    Micro-batches accumulated into one optimizer step.
    """
    weight_decay: Annotated[float | None, Field(ge=0.0, title="Weight Decay")] = 0.0
    """
    AdamW decoupled weight decay.
    """
    warmup_steps: Annotated[float | None, Field(ge=0.0, title="Warmup Steps")] = 0.0
    """
    Linear warm-up: a step count (>= 1) or a fraction of all steps (< 1).
    """
    lr_scheduler_type: Annotated[LrSchedulerType | None, Field(title="Lr Scheduler Type")] = (
        "linear"
    )
    """
    Learning-rate schedule after warm-up.
    """
    max_grad_norm: Annotated[float | None, Field(gt=0.0, title="Max Grad Norm")] = 1.0
    """
    Gradient clipping norm.
    """
    seed: Annotated[int | None, Field(ge=0, le=4294967295, title="Seed")] = 42
    """
    Seed for the classification head's initialisation, the data order and dropout.
    """
    bf16: Annotated[bool | None, Field(title="Bf16")] = False
    """
    bfloat16 mixed precision (needs hardware support).
    """
    gradient_checkpointing: Annotated[bool | None, Field(title="Gradient Checkpointing")] = False
    """
    Recompute activations in the backward pass: less memory, about 20% slower.
    """
    logging_steps: Annotated[int | None, Field(ge=1, title="Logging Steps")] = 10
    """
    Optimizer steps between two metric reports (not hashed).
    """
    save_steps: Annotated[SaveSteps | None, Field(title="Save Steps")] = None
    """
    Save a resumable checkpoint every this many steps (the last two are kept); null saves none (not hashed).
    """
    max_length: Annotated[MaxLength | None, Field(title="Max Length", validate_default=True)] = 512
    """
    Longer texts keep their last this-many tokens (the newest text of a stream, where the score is read); null keeps all.
    """
    eval_fraction: Annotated[float | None, Field(ge=0.0, lt=1.0, title="Eval Fraction")] = 0.1
    """
    Share of the dataset's rows held out for evaluation (a fixed split); 0 holds none out.
    """
    per_device_eval_batch_size: Annotated[
        int | None, Field(ge=1, title="Per Device Eval Batch Size")
    ] = 8
    """
    Texts per device in evaluation (not hashed).
    """
    eval_steps: Annotated[EvalSteps | None, Field(title="Eval Steps")] = None
    """
    Evaluate on the held-out rows every this many steps; null evaluates at the end only (not hashed).
    """
    target: Annotated[Target | None, Field(title="Target")] = "input"
    """
    What the classifier reads: input (the prompt), output (the response, every prefix) or exchange (the response prefix after its prompt).
    """
    prefix_stride: Annotated[int | None, Field(ge=1, le=512, title="Prefix Stride")] = 8
    """
    Output and exchange: train on every this-many-th token prefix of a response, and on the whole response (ignored for input).
    """
    threshold: Annotated[float | None, Field(gt=0.0, lt=1.0, title="Threshold")] = 0.5
    """
    A text is flagged when a category's score reaches this; stored with the model and used for the held-out metrics (not hashed).
    """


class ClassifierDatasetCreate(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    name: Annotated[str, Field(pattern="^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$", title="Name")]
    """
    The dataset (kind classifier).
    """
    responses_job: Annotated[str, Field(max_length=64, min_length=1, title="Responses Job")]
    """
    A finished responses job (POST .../responses).
    """


class ClassifierRunCreate(BaseModel):
    """
    A constitutional classifier run on a classifier dataset: base_model gets a fresh
    classification head, one score per restricted category.
    """

    model_config = ConfigDict(
        extra="allow",
    )
    type: Annotated[Literal["classifier"], Field(title="Type")]
    dataset: Annotated[str, Field(max_length=160, min_length=1, title="Dataset")]
    """
    Dataset name or name@version.
    """
    base_model: Annotated[
        str,
        Field(pattern="^(run:[0-9a-f]{32}|[A-Za-z0-9._/-]{1,128})$", title="Base Model"),
    ]
    """
    A model name the trainer serves (e.g. smollm2) or run:<id> of a finished run.
    """
    config: ClassifierConfig | None = None
    """
    The classifier run's hyper-parameters; what is left out takes its default, and the run stores them all. It may not set the fields beside config or dataset_version_id (422 naming config.<key>).
    """


class Target1(StrEnum):
    input = "input"
    output = "output"
    exchange = "exchange"


class ClassifyOut(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    classifier: Annotated[str, Field(title="Classifier")]
    target: Annotated[Target1, Field(title="Target")]
    scores: Annotated[dict[str, float], Field(title="Scores")]
    """
    Each restricted category's score (0-1).
    """
    score: Annotated[float, Field(title="Score")]
    """
    The highest category score.
    """
    category: Annotated[str | None, Field(title="Category")]
    """
    The highest-scoring category when flagged.
    """
    flagged: Annotated[bool, Field(title="Flagged")]
    """
    score >= threshold: block it.
    """
    threshold: Annotated[float, Field(title="Threshold")]
    score_ms: Annotated[float, Field(title="Score Ms")]
    """
    Time the classifier server spent scoring.
    """


class Target2(StrEnum):
    """
    What is classified; it must be what the classifier was trained on (default: that).
    """

    input = "input"
    output = "output"
    exchange = "exchange"


class Prompt(RootModel[str]):
    root: Annotated[str, Field(max_length=32000, title="Prompt")]
    """
    The user's message (input, exchange).
    """


class Response(RootModel[str]):
    root: Annotated[str, Field(max_length=32000, title="Response")]
    """
    The model's response (output, exchange).
    """


class Threshold(RootModel[float]):
    root: Annotated[float, Field(gt=0.0, lt=1.0, title="Threshold")]
    """
    Flag at this score; default: the run's.
    """


class ClassifyRequest(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    classifier: Annotated[str, Field(pattern="^[0-9a-f]{32}$", title="Classifier")]
    """
    A completed classifier run (its id).
    """
    target: Annotated[Target2 | None, Field(title="Target")] = None
    """
    What is classified; it must be what the classifier was trained on (default: that).
    """
    prompt: Annotated[Prompt | None, Field(title="Prompt")] = None
    """
    The user's message (input, exchange).
    """
    response: Annotated[Response | None, Field(title="Response")] = None
    """
    The model's response (output, exchange).
    """
    threshold: Annotated[Threshold | None, Field(title="Threshold")] = None
    """
    Flag at this score; default: the run's.
    """


class ConfigHash(RootModel[str]):
    root: Annotated[str, Field(pattern="^[0-9a-f]{16}$", title="Config Hash")]
    """
    config_hash() of the config the model was trained with; 409 unless it is the run's config_hash. Charter's trainer always sends it.
    """


class CompleteReport(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    lease_token: Annotated[LeaseToken | None, Field(title="Lease Token")] = None
    """
    Required: the lease_token of the claim; 409 when it is missing, wrong, or the lease was taken over.
    """
    owner: Annotated[Owner | None, Field(title="Owner")] = None
    """
    Not checked (anyone can read lease_owner); accepted so that a trainer that still sends it is told about lease_token.
    """
    artifact_uri: Annotated[str, Field(max_length=1024, min_length=1, title="Artifact Uri")]
    """
    The model directory, a file:// URI inside <artifacts_dir>/runs/<run id>/.
    """
    config_hash: Annotated[ConfigHash | None, Field(title="Config Hash")] = None
    """
    config_hash() of the config the model was trained with; 409 unless it is the run's config_hash. Charter's trainer always sends it.
    """


class ConstitutionSummary(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    name: Annotated[str, Field(title="Name")]
    latest_version: Annotated[int, Field(title="Latest Version")]
    latest_ref: Annotated[str, Field(title="Latest Ref")]
    updated_at: Annotated[AwareDatetime, Field(title="Updated At")]


class ConstitutionVersionOut(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    name: Annotated[str, Field(title="Name")]
    version: Annotated[int, Field(title="Version")]
    ref: Annotated[str, Field(title="Ref")]
    content_hash: Annotated[str, Field(title="Content Hash")]
    created_at: Annotated[AwareDatetime, Field(title="Created At")]
    created: Annotated[bool | None, Field(title="Created")] = None
    content: Annotated[dict[str, Any] | None, Field(title="Content")] = None


class CritiqueRenderOut(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    critique: Annotated[list[dict[str, str]], Field(title="Critique")]
    revision: Annotated[list[dict[str, str]], Field(title="Revision")]


class CritiqueTemplateCreate(BaseModel):
    """
    A critique template (see docs/TEMPLATES.md): the system turn and the sandboxed
    Jinja2 of the critique and revision request turns. Fields left out take the
    defaults of ``charter-default``.
    """

    model_config = ConfigDict(
        extra="allow",
    )
    name: Annotated[str, Field(max_length=32, pattern="^[a-z][a-z0-9-]{0,31}$", title="Name")]
    description: Annotated[str | None, Field(max_length=1024, title="Description")] = ""
    system: Annotated[str | None, Field(max_length=4096, min_length=1, title="System")] = (
        "You are a helpful, honest and harmless assistant."
    )
    critique: Annotated[str | None, Field(max_length=16384, min_length=1, title="Critique")] = (
        "{{ critique_request }}"
    )
    revision: Annotated[str | None, Field(max_length=16384, min_length=1, title="Revision")] = (
        "{{ revision_request }}"
    )
    delimiters: Annotated[list[str] | None, Field(max_length=32, title="Delimiters")] = None


class CsvUpload(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    format: Annotated[Literal["csv"], Field(title="Format")]
    statements: Annotated[str, Field(title="Statements")]
    """
    statement,text[,author] rows. The file's text. A string is held to the gateway's max_string_chars (1 MB by 
    """
    votes: Annotated[str, Field(title="Votes")]
    """
    participant,statement,vote rows. The file's text. A string is held to the gateway's max_string_chars (1 MB by 
    """


class MaxLength1(RootModel[int]):
    root: Annotated[int, Field(ge=2, title="Max Length")] = 1024
    """
    Prompt + response is truncated to this many tokens (keeping the start); null keeps all.
    """


class LossType(StrEnum):
    """
    sigmoid is the DPO paper's loss (every row a hard preference); soft is its cross-entropy against each row's chosen_probability p, -p log sigmoid(x) - (1 - p) log sigmoid(-x) with x the implicit reward margin (conservative DPO with epsilon = 1 - p), minimal where sigmoid(x) = p.
    """

    sigmoid = "sigmoid"
    hinge = "hinge"
    ipo = "ipo"
    exo_pair = "exo_pair"
    nca_pair = "nca_pair"
    robust = "robust"
    bco_pair = "bco_pair"
    sppo_hard = "sppo_hard"
    aot = "aot"
    aot_unpaired = "aot_unpaired"
    apo_zero = "apo_zero"
    apo_down = "apo_down"
    discopop = "discopop"
    sigmoid_norm = "sigmoid_norm"
    soft = "soft"


class DPOConfig(BaseModel):
    """
    A DPO run (Rafailov et al. 2023) on preference rows, an alternative to PM + PPO.

    The reference policy is a frozen copy of the starting model. TRL's losses treat rows
    as hard preferences; ``soft`` trains towards each row's soft label.
    """

    model_config = ConfigDict(
        extra="allow",
    )
    learning_rate: Annotated[float | None, Field(gt=0.0, le=1.0, title="Learning Rate")] = 1e-06
    """
    Peak AdamW learning rate (TRL's DPO default).
    """
    max_steps: Annotated[int | None, Field(ge=-1, title="Max Steps")] = -1
    """
    Optimizer steps to run (>= 1); -1 lets num_train_epochs decide.
    """
    num_train_epochs: Annotated[float | None, Field(ge=0.0, title="Num Train Epochs")] = 1.0
    """
    Passes over the training rows (> 0 unless max_steps is set); ignored when max_steps is set.
    """
    per_device_train_batch_size: Annotated[
        int | None, Field(ge=1, title="Per Device Train Batch Size")
    ] = 8
    """
    Preference pairs per device and micro-batch.
    """
    gradient_accumulation_steps: Annotated[
        int | None, Field(ge=1, title="Gradient Accumulation Steps")
    ] = 1
    """
    Micro-batches accumulated into one optimizer step.
    """
    weight_decay: Annotated[float | None, Field(ge=0.0, title="Weight Decay")] = 0.0
    """
    AdamW decoupled weight decay.
    """
    warmup_steps: Annotated[float | None, Field(ge=0.0, title="Warmup Steps")] = 0.0
    """
    Linear warm-up: a step count (>= 1) or a fraction of all steps (< 1).
    """
    lr_scheduler_type: Annotated[LrSchedulerType | None, Field(title="Lr Scheduler Type")] = (
        "linear"
    )
    """
    Learning-rate schedule after warm-up.
    """
    max_grad_norm: Annotated[float | None, Field(gt=0.0, title="Max Grad Norm")] = 1.0
    """
    Gradient clipping norm.
    """
    seed: Annotated[int | None, Field(ge=0, le=4294967295, title="Seed")] = 42
    """
    Seed for the data order and dropout.
    """
    bf16: Annotated[bool | None, Field(title="Bf16")] = False
    """
    bfloat16 mixed precision (needs hardware support).
    """
    gradient_checkpointing: Annotated[bool | None, Field(title="Gradient Checkpointing")] = False
    """
    Recompute activations in the backward pass: less memory, about 20% slower.
    """
    logging_steps: Annotated[int | None, Field(ge=1, title="Logging Steps")] = 10
    """
    Optimizer steps between two metric reports (not hashed).
    """
    save_steps: Annotated[SaveSteps | None, Field(title="Save Steps")] = None
    """
    Save a resumable checkpoint every this many steps (the last two are kept); null saves none (not hashed).
    """
    max_length: Annotated[MaxLength1 | None, Field(title="Max Length", validate_default=True)] = (
        1024
    )
    """
    Prompt + response is truncated to this many tokens (keeping the start); null keeps all.
    """
    eval_fraction: Annotated[float | None, Field(ge=0.0, lt=1.0, title="Eval Fraction")] = 0.1
    """
    Share of the dataset's rows held out for evaluation (a fixed split); 0 holds none out.
    """
    per_device_eval_batch_size: Annotated[
        int | None, Field(ge=1, title="Per Device Eval Batch Size")
    ] = 8
    """
    Preference pairs per device in evaluation (not hashed).
    """
    eval_steps: Annotated[EvalSteps | None, Field(title="Eval Steps")] = None
    """
    Evaluate on the held-out rows every this many steps; null evaluates at the end only (not hashed).
    """
    beta: Annotated[float | None, Field(gt=0.0, title="Beta")] = 0.1
    """
    Strength of the implicit KL penalty towards the reference; higher stays closer.
    """
    loss_type: Annotated[LossType | None, Field(title="Loss Type")] = "sigmoid"
    """
    sigmoid is the DPO paper's loss (every row a hard preference); soft is its cross-entropy against each row's chosen_probability p, -p log sigmoid(x) - (1 - p) log sigmoid(-x) with x the implicit reward margin (conservative DPO with epsilon = 1 - p), minimal where sigmoid(x) = p.
    """


class DPORunCreate(BaseModel):
    """
    A DPO run on a preference dataset.
    """

    model_config = ConfigDict(
        extra="allow",
    )
    type: Annotated[Literal["dpo"], Field(title="Type")]
    dataset: Annotated[str, Field(max_length=160, min_length=1, title="Dataset")]
    """
    Dataset name or name@version.
    """
    base_model: Annotated[
        str,
        Field(pattern="^(run:[0-9a-f]{32}|[A-Za-z0-9._/-]{1,128})$", title="Base Model"),
    ]
    """
    A model name the trainer serves (e.g. smollm2) or run:<id> of a finished run.
    """
    config: DPOConfig | None = None
    """
    The dpo run's hyper-parameters; what is left out takes its default, and the run stores them all. It may not set the fields beside config or dataset_version_id (422 naming config.<key>).
    """


class Kind(StrEnum):
    sft = "sft"
    preference = "preference"


class JobIds(RootModel[list[str]]):
    root: Annotated[list[str], Field(max_length=1000, min_length=1, title="Job Ids")]
    """
    Labels of these jobs only. Without it, every job but those of judge evaluations (their gold items and injected variants are no training data).
    """


class Constitution(RootModel[str]):
    root: Annotated[str, Field(max_length=80, min_length=1, title="Constitution")]
    """
    name@version, or a name for every version of that constitution.
    """


class Kind1(StrEnum):
    sl_cai = "sl_cai"
    critique = "critique"
    revise = "revise"
    generate = "generate"
    rl_cai = "rl_cai"
    compare = "compare"


class Kinds(RootModel[list[Kind1]]):
    root: Annotated[list[Kind1], Field(min_length=1, title="Kinds")]
    """
    Label kinds; default: every kind the dataset kind can hold but generations (sft: sl_cai, critique, revise, and generate when named; preference: rl_cai, compare).
    """


class MinConfidence(RootModel[float]):
    root: Annotated[float, Field(ge=0.5, le=1.0, title="Min Confidence")]
    """
    Preference only: the soft label of the chosen side, max(p_a, 1 - p_a).
    """


class Review(StrEnum):
    """
    Human review (docs/REVIEW.md): reviewed = labels with a verdict; agreed = labels most of whose reviewers agree with the AI; human_verdicts = labels with a decisive human majority, whose verdict replaces the AI's (preference: chosen is the humans' side, probability 1.0).
    """

    reviewed = "reviewed"
    agreed = "agreed"
    human_verdicts = "human_verdicts"


class DatasetFilter(BaseModel):
    """
    Which labels a version freezes. Every condition is optional; all must hold.
    """

    model_config = ConfigDict(
        extra="allow",
    )
    job_ids: Annotated[JobIds | None, Field(title="Job Ids")] = None
    """
    Labels of these jobs only. Without it, every job but those of judge evaluations (their gold items and injected variants are no training data).
    """
    constitution: Annotated[Constitution | None, Field(title="Constitution")] = None
    """
    name@version, or a name for every version of that constitution.
    """
    kinds: Annotated[Kinds | None, Field(title="Kinds")] = None
    """
    Label kinds; default: every kind the dataset kind can hold but generations (sft: sl_cai, critique, revise, and generate when named; preference: rl_cai, compare).
    """
    min_confidence: Annotated[MinConfidence | None, Field(title="Min Confidence")] = None
    """
    Preference only: the soft label of the chosen side, max(p_a, 1 - p_a).
    """
    exclude_swap_disagreements: Annotated[
        bool | None, Field(title="Exclude Swap Disagreements")
    ] = False
    """
    Preference only: drop labels whose two orders picked different winners.
    """
    review: Annotated[Review | None, Field(title="Review")] = None
    """
    Human review (docs/REVIEW.md): reviewed = labels with a verdict; agreed = labels most of whose reviewers agree with the AI; human_verdicts = labels with a decisive human majority, whose verdict replaces the AI's (preference: chosen is the humans' side, probability 1.0).
    """
    created_after: Annotated[AwareDatetime | None, Field(title="Created After")] = None
    """
    Inclusive; UTC if naive.
    """
    created_before: Annotated[AwareDatetime | None, Field(title="Created Before")] = None
    """
    Exclusive; UTC if naive.
    """


class Source(StrEnum):
    """
    labels: frozen from a label filter; upload: uploaded rows; classifier_data: built from classifier-data jobs (the filter names them).
    """

    labels = "labels"
    upload = "upload"
    classifier_data = "classifier_data"


class State(StrEnum):
    """
    freezing: rows are being copied in the background (not exportable yet).
    """

    freezing = "freezing"
    ready = "ready"
    failed = "failed"


class DatasetVersionOut(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    name: Annotated[str, Field(title="Name")]
    kind: Annotated[str, Field(title="Kind")]
    version: Annotated[int, Field(title="Version")]
    ref: Annotated[str, Field(title="Ref")]
    source: Annotated[Source, Field(title="Source")]
    """
    labels: frozen from a label filter; upload: uploaded rows; classifier_data: built from classifier-data jobs (the filter names them).
    """
    state: Annotated[State, Field(title="State")]
    """
    freezing: rows are being copied in the background (not exportable yet).
    """
    rows_done: Annotated[int, Field(title="Rows Done")]
    """
    Rows frozen so far (progress).
    """
    rows_total: Annotated[int, Field(title="Rows Total")]
    """
    Rows the version will have.
    """
    row_count: Annotated[int, Field(title="Row Count")]
    """
    The version's rows; 0 until it is ready.
    """
    checksum: Annotated[str | None, Field(title="Checksum")]
    """
    sha256 of the version's full JSONL export; null until it is ready.
    """
    error: Annotated[str | None, Field(title="Error")] = None
    """
    Why freezing failed.
    """
    filter: Annotated[dict[str, Any], Field(title="Filter")]
    mix: Annotated[dict[str, Any] | None, Field(title="Mix")]
    created_at: Annotated[AwareDatetime, Field(title="Created At")]
    ready_at: Annotated[AwareDatetime | None, Field(title="Ready At")] = None


class DeliveryOut(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    id: Annotated[str, Field(title="Id")]
    endpoint_id: Annotated[str, Field(title="Endpoint Id")]
    event_type: Annotated[str, Field(title="Event Type")]
    msg_id: Annotated[str, Field(title="Msg Id")]
    payload: Annotated[dict[str, Any], Field(title="Payload")]
    status: Annotated[str, Field(title="Status")]
    attempts: Annotated[int, Field(title="Attempts")]
    next_attempt_at: Annotated[AwareDatetime, Field(title="Next Attempt At")]
    last_attempt_at: Annotated[AwareDatetime | None, Field(title="Last Attempt At")]
    last_status_code: Annotated[int | None, Field(title="Last Status Code")]
    last_error: Annotated[str | None, Field(title="Last Error")]
    created_at: Annotated[AwareDatetime, Field(title="Created At")]
    delivered_at: Annotated[AwareDatetime | None, Field(title="Delivered At")]


class Statements(RootModel[list[str]]):
    root: Annotated[list[str], Field(max_length=256, min_length=1, title="Statements")]
    """
    Statement ids to draft from, in this order; default: the candidates.
    """


class WordingJob(RootModel[str]):
    root: Annotated[str, Field(max_length=32, min_length=1, title="Wording Job")]
    """
    A completed wording job of this input: its answers word the principles.
    """


class Plot(RootModel[tuple[str, str]]):
    root: Annotated[tuple[str, str], Field(max_length=2, min_length=2, title="Plot")]


class Event(StrEnum):
    job_completed = "job.completed"
    job_failed = "job.failed"
    job_cancelled = "job.cancelled"
    dataset_version_frozen = "dataset_version.frozen"
    training_run_completed = "training_run.completed"
    training_run_failed = "training_run.failed"
    review_target_reached = "review.target_reached"


class EndpointCreate(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    url: Annotated[
        str,
        Field(
            max_length=2048,
            pattern="^https?://[^\\s/?#@:\\[\\]]+(:[0-9]{1,5})?([/?#]\\S*)?$",
            title="Url",
        ),
    ]
    """
    Absolute http(s) URL the deliveries are POSTed to.
    """
    events: Annotated[list[Event], Field(max_length=7, min_length=1, title="Events")]
    description: Annotated[str | None, Field(max_length=256, title="Description")] = ""
    enabled: Annotated[bool | None, Field(title="Enabled")] = True


class EndpointOut(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    id: Annotated[str, Field(title="Id")]
    url: Annotated[str, Field(title="Url")]
    description: Annotated[str, Field(title="Description")]
    events: Annotated[list[str], Field(title="Events")]
    enabled: Annotated[bool, Field(title="Enabled")]
    disabled_reason: Annotated[str | None, Field(title="Disabled Reason")]
    created_at: Annotated[AwareDatetime, Field(title="Created At")]


class Url(RootModel[str]):
    root: Annotated[
        str,
        Field(
            max_length=2048,
            pattern="^https?://[^\\s/?#@:\\[\\]]+(:[0-9]{1,5})?([/?#]\\S*)?$",
            title="Url",
        ),
    ]


class Events(RootModel[list[Event]]):
    root: Annotated[list[Event], Field(max_length=7, min_length=1, title="Events")]


class Description(RootModel[str]):
    root: Annotated[str, Field(max_length=256, title="Description")]


class EndpointUpdate(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    url: Annotated[Url | None, Field(title="Url")] = None
    events: Annotated[Events | None, Field(title="Events")] = None
    description: Annotated[Description | None, Field(title="Description")] = None
    enabled: Annotated[bool | None, Field(title="Enabled")] = None


class EndpointWithSecret(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    id: Annotated[str, Field(title="Id")]
    url: Annotated[str, Field(title="Url")]
    description: Annotated[str, Field(title="Description")]
    events: Annotated[list[str], Field(title="Events")]
    enabled: Annotated[bool, Field(title="Enabled")]
    disabled_reason: Annotated[str | None, Field(title="Disabled Reason")]
    created_at: Annotated[AwareDatetime, Field(title="Created At")]
    secret: Annotated[str, Field(title="Secret")]
    """
    The signing secret (whsec_...). It is shown only in this response.
    """


class EstimateOut(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    value: Annotated[float | None, Field(title="Value")]
    """
    The estimate; null when n is 0.
    """
    low: Annotated[float | None, Field(title="Low")]
    """
    Lower end of the 95% interval; null when n < 2.
    """
    high: Annotated[float | None, Field(title="High")]
    """
    Upper end of the 95% interval; null when n < 2.
    """
    n: Annotated[int, Field(title="N")]
    """
    Observations it is computed over.
    """


class Seed(RootModel[int]):
    root: Annotated[int, Field(ge=0, le=4611686018427388000, title="Seed")]
    """
    Random if omitted.
    """


class ChunkSize(RootModel[int]):
    root: Annotated[int, Field(ge=1, le=1024, title="Chunk Size")]
    """
    Items per task.
    """


class FailReport(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    lease_token: Annotated[LeaseToken | None, Field(title="Lease Token")] = None
    """
    Required: the lease_token of the claim; 409 when it is missing, wrong, or the lease was taken over.
    """
    owner: Annotated[Owner | None, Field(title="Owner")] = None
    """
    Not checked (anyone can read lease_owner); accepted so that a trainer that still sends it is told about lease_token.
    """
    error: Annotated[str, Field(max_length=20000, min_length=1, title="Error")]


class FieldError(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    field: Annotated[str, Field(title="Field")]
    """
    Where, e.g. body.rows.0.prompt or query.limit.
    """
    message: Annotated[str, Field(title="Message")]
    type: Annotated[str, Field(title="Type")]
    """
    pydantic's error type, e.g. missing or string_too_long.
    """


class ScaleRewards(StrEnum):
    """
    Divide advantages by the reward standard deviation of each prompt's group, of the whole batch, or not at all.
    """

    group = "group"
    batch = "batch"
    none = "none"


class GRPOConfig(BaseModel):
    """
    A GRPO run (Shao et al. 2024): clipped policy-gradient steps on group-normalised
    rewards; the KL to the reference is a loss term.
    """

    model_config = ConfigDict(
        extra="allow",
    )
    learning_rate: Annotated[float | None, Field(gt=0.0, le=1.0, title="Learning Rate")] = 1e-06
    """
    Peak AdamW learning rate (TRL's default).
    """
    max_steps: Annotated[int | None, Field(ge=-1, title="Max Steps")] = 500
    """
    Optimizer steps to run (>= 1); -1 lets num_train_epochs decide.
    """
    num_train_epochs: Annotated[float | None, Field(ge=0.0, title="Num Train Epochs")] = 1.0
    """
    Passes over the training rows (> 0 unless max_steps is set); ignored when max_steps is set.
    """
    per_device_train_batch_size: Annotated[
        int | None, Field(ge=1, title="Per Device Train Batch Size")
    ] = 8
    """
    Completions per device and micro-batch; with gradient_accumulation_steps a multiple of num_generations.
    """
    gradient_accumulation_steps: Annotated[
        int | None, Field(ge=1, title="Gradient Accumulation Steps")
    ] = 1
    """
    Micro-batches accumulated into one optimizer step.
    """
    weight_decay: Annotated[float | None, Field(ge=0.0, title="Weight Decay")] = 0.0
    """
    AdamW decoupled weight decay.
    """
    warmup_steps: Annotated[float | None, Field(ge=0.0, title="Warmup Steps")] = 0.0
    """
    Linear warm-up: a step count (>= 1) or a fraction of all steps (< 1).
    """
    lr_scheduler_type: Annotated[LrSchedulerType | None, Field(title="Lr Scheduler Type")] = (
        "linear"
    )
    """
    Learning-rate schedule after warm-up.
    """
    max_grad_norm: Annotated[float | None, Field(gt=0.0, title="Max Grad Norm")] = 1.0
    """
    Gradient clipping norm.
    """
    seed: Annotated[int | None, Field(ge=0, le=4294967295, title="Seed")] = 42
    """
    Seed for the data order and dropout.
    """
    bf16: Annotated[bool | None, Field(title="Bf16")] = False
    """
    bfloat16 mixed precision (needs hardware support).
    """
    gradient_checkpointing: Annotated[bool | None, Field(title="Gradient Checkpointing")] = False
    """
    Recompute activations in the backward pass: less memory, about 20% slower.
    """
    logging_steps: Annotated[int | None, Field(ge=1, title="Logging Steps")] = 10
    """
    Optimizer steps between two metric reports (not hashed).
    """
    save_steps: Annotated[SaveSteps | None, Field(title="Save Steps")] = None
    """
    Save a resumable checkpoint every this many steps (the last two are kept); null saves none (not hashed).
    """
    num_generations: Annotated[int | None, Field(ge=2, title="Num Generations")] = 4
    """
    Completions sampled per prompt: the group each one is compared with.
    """
    max_completion_length: Annotated[int | None, Field(ge=1, title="Max Completion Length")] = 64
    """
    Most tokens sampled per completion.
    """
    temperature: Annotated[float | None, Field(gt=0.0, title="Temperature")] = 1.0
    """
    Sampling temperature.
    """
    beta: Annotated[float | None, Field(ge=0.0, title="Beta")] = 0.05
    """
    KL coefficient towards the starting policy; 0 loads no reference model.
    """
    epsilon: Annotated[float | None, Field(gt=0.0, title="Epsilon")] = 0.2
    """
    Policy ratio clip epsilon.
    """
    num_iterations: Annotated[int | None, Field(ge=1, title="Num Iterations")] = 1
    """
    Updates on each batch of completions before sampling again.
    """
    scale_rewards: Annotated[ScaleRewards | None, Field(title="Scale Rewards")] = "group"
    """
    Divide advantages by the reward standard deviation of each prompt's group, of the whole batch, or not at all.
    """


class RewardRun(RootModel[str]):
    root: Annotated[str, Field(pattern="^[0-9a-f]{32}$", title="Reward Run")]
    """
    Required: the completed PM run to optimise.
    """


class GRPORunCreate(BaseModel):
    """
    A GRPO run (TRL) against a completed PM run, on the prompts of an SFT or preference
    dataset; the KL reference is base_model.
    """

    model_config = ConfigDict(
        extra="allow",
    )
    type: Annotated[Literal["grpo"], Field(title="Type")]
    dataset: Annotated[str, Field(max_length=160, min_length=1, title="Dataset")]
    """
    Dataset name or name@version.
    """
    base_model: Annotated[
        str,
        Field(pattern="^(run:[0-9a-f]{32}|[A-Za-z0-9._/-]{1,128})$", title="Base Model"),
    ]
    """
    A model name the trainer serves (e.g. smollm2) or run:<id> of a finished run.
    """
    reward_run: Annotated[RewardRun | None, Field(title="Reward Run")] = None
    """
    Required: the completed PM run to optimise.
    """
    config: GRPOConfig | None = None
    """
    The grpo run's hyper-parameters; what is left out takes its default, and the run stores them all. It may not set the fields beside config or dataset_version_id (422 naming config.<key>).
    """


class GoldItemOut(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    position: Annotated[int, Field(title="Position")]
    prompt: Annotated[str | None, Field(title="Prompt")]
    messages: Annotated[list[dict[str, str]] | None, Field(title="Messages")]
    response_a: Annotated[str, Field(title="Response A")]
    response_b: Annotated[str, Field(title="Response B")]
    answer: Annotated[str, Field(title="Answer")]
    p_gold: Annotated[float | None, Field(title="P Gold")]
    category: Annotated[str | None, Field(title="Category")]


class GoldSetOut(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    id: Annotated[str, Field(title="Id")]
    name: Annotated[str, Field(title="Name")]
    version: Annotated[int, Field(title="Version")]
    ref: Annotated[str, Field(title="Ref")]
    batch_id: Annotated[str, Field(title="Batch Id")]
    row_count: Annotated[int, Field(title="Row Count")]
    content_hash: Annotated[str, Field(title="Content Hash")]
    categories: Annotated[dict[str, int], Field(title="Categories")]
    created_at: Annotated[AwareDatetime, Field(title="Created At")]
    created: Annotated[bool | None, Field(title="Created")] = None


class GroupOut(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    index: Annotated[int, Field(title="Index")]
    size: Annotated[int, Field(title="Size")]
    x: Annotated[float, Field(title="X")]
    y: Annotated[float, Field(title="Y")]


class GroupVotesOut(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    agree: Annotated[int, Field(title="Agree")]
    disagree: Annotated[int, Field(title="Disagree")]
    passed: Annotated[int, Field(title="Passed")]
    seen: Annotated[int, Field(title="Seen")]
    p_agree: Annotated[float, Field(title="P Agree")]
    p_disagree: Annotated[float, Field(title="P Disagree")]


class HeadToHeadOut(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    a: Annotated[str, Field(title="A")]
    b: Annotated[str, Field(title="B")]
    comparisons: Annotated[int, Field(title="Comparisons")]
    a_preferred: Annotated[float | None, Field(title="A Preferred")]


class ImportOut(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    lines: Annotated[int, Field(title="Lines")]
    created: Annotated[int, Field(title="Created")]
    updated: Annotated[int, Field(title="Updated")]
    unchanged: Annotated[int, Field(title="Unchanged")]


class Attacks(RootModel[list[str]]):
    root: Annotated[list[str], Field(max_length=43, min_length=1, title="Attacks")]
    """
    Attack ids from GET /v1/evals/attacks; the whole suite if omitted.
    """


class InjectionSpec(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    attacks: Annotated[Attacks | None, Field(title="Attacks")] = None
    """
    Attack ids from GET /v1/evals/attacks; the whole suite if omitted.
    """
    max_items: Annotated[int | None, Field(ge=1, le=1000, title="Max Items")] = 50
    """
    Gold items (the first ones) that get the attacks: items x attacks variants.
    """
    defences_off: Annotated[bool | None, Field(title="Defences Off")] = True
    """
    Also score clean and injected pairs with neutralisation off.
    """


class ItemState(StrEnum):
    """
    Where one work item is: queued, leased by a worker (running), or final.
    """

    queued = "queued"
    running = "running"
    done = "done"
    abstained = "abstained"
    failed = "failed"
    cancelled = "cancelled"


class Principle(RootModel[str]):
    root: Annotated[str, Field(max_length=64, title="Principle")]
    """
    Comparison jobs: judge under this one comparison principle (its id) instead of one drawn at random per item.
    """


class SystemPrompt(StrEnum):
    """
    Generate jobs: the policy's system prompt. 'default' is Charter's helpful, honest and harmless assistant; 'constitution' adds the constitution's description and comparison principles, as the guidance to follow (the baseline the paper left out: a model told its constitution, without training on it).
    """

    default = "default"
    constitution = "constitution"


class JobStatus(StrEnum):
    """
    A job's status, derived from its items' states (:func:`job_status`).
    """

    queued = "queued"
    running = "running"
    completed = "completed"
    cancelled = "cancelled"


class JobType(StrEnum):
    sl_cai = "sl_cai"
    rl_cai = "rl_cai"
    critique = "critique"
    revise = "revise"
    compare = "compare"
    generate = "generate"


class JsonUpload(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    format: Annotated[Literal["json"], Field(title="Format")]
    statements: Annotated[list[Any], Field(max_length=10000, title="Statements")]
    """
    [{id, text, author?}]; ids are strings or integers.
    """
    votes: Annotated[list[Any], Field(title="Votes")]
    """
    [{participant, statement, vote}]; a vote is 1, -1, 0 or agree, disagree, pass.
    """


class Name(RootModel[str]):
    root: Annotated[str, Field(pattern="[A-Za-z0-9][A-Za-z0-9._-]{0,39}", title="Name")]
    """
    How the report names it; 'config-<n>' (1-based) if omitted.
    """


class Principle1(RootModel[str]):
    root: Annotated[str, Field(max_length=64, title="Principle")]
    """
    Judge under this one comparison principle instead of a random draw.
    """


class KappaOut(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    mean: Annotated[float | None, Field(title="Mean")]
    """
    Mean pairwise Cohen's kappa between reviewers.
    """
    pairs: Annotated[int, Field(title="Pairs")]
    undefined_pairs: Annotated[int, Field(title="Undefined Pairs")]
    items: Annotated[int, Field(title="Items")]
    """
    Labels reviewed by two or more humans.
    """


class Scope(StrEnum):
    admin = "admin"
    submit = "submit"
    read = "read"
    train = "train"
    review = "review"
    classify = "classify"


class ExpiresInDays(RootModel[int]):
    root: Annotated[int, Field(ge=1, le=3650, title="Expires In Days")]


class KeyCreate(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    name: Annotated[str | None, Field(max_length=128, title="Name")] = ""
    scopes: Annotated[list[Scope], Field(max_length=6, min_length=1, title="Scopes")]
    expires_in_days: Annotated[ExpiresInDays | None, Field(title="Expires In Days")] = None


class KeyCreated(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    id: Annotated[str, Field(title="Id")]
    name: Annotated[str, Field(title="Name")]
    prefix: Annotated[str, Field(title="Prefix")]
    scopes: Annotated[list[str], Field(title="Scopes")]
    created_at: Annotated[AwareDatetime, Field(title="Created At")]
    expires_at: Annotated[AwareDatetime | None, Field(title="Expires At")]
    revoked_at: Annotated[AwareDatetime | None, Field(title="Revoked At")]
    last_used_at: Annotated[AwareDatetime | None, Field(title="Last Used At")]
    key: Annotated[str, Field(title="Key")]
    """
    The secret key. It is shown only once.
    """


class KeyOut(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    id: Annotated[str, Field(title="Id")]
    name: Annotated[str, Field(title="Name")]
    prefix: Annotated[str, Field(title="Prefix")]
    scopes: Annotated[list[str], Field(title="Scopes")]
    created_at: Annotated[AwareDatetime, Field(title="Created At")]
    expires_at: Annotated[AwareDatetime | None, Field(title="Expires At")]
    revoked_at: Annotated[AwareDatetime | None, Field(title="Revoked At")]
    last_used_at: Annotated[AwareDatetime | None, Field(title="Last Used At")]


class LabelOut(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    id: Annotated[int, Field(title="Id")]
    job_id: Annotated[str, Field(title="Job Id")]
    prompt_id: Annotated[int, Field(title="Prompt Id")]
    work_item_id: Annotated[int, Field(title="Work Item Id")]
    kind: Annotated[str, Field(title="Kind")]
    conversation: Annotated[list[dict[str, str]], Field(title="Conversation")]
    response: Annotated[str | None, Field(title="Response")]
    completion: Annotated[str | None, Field(title="Completion")]
    response_a: Annotated[str | None, Field(title="Response A")]
    response_b: Annotated[str | None, Field(title="Response B")]
    p_a: Annotated[float | None, Field(title="P A")]
    p_a_forward: Annotated[float | None, Field(title="P A Forward")]
    p_a_swapped: Annotated[float | None, Field(title="P A Swapped")]
    swap_disagreement: Annotated[bool | None, Field(title="Swap Disagreement")]
    choice_mass: Annotated[float | None, Field(title="Choice Mass")]
    choice_logprobs: Annotated[dict[str, Any] | None, Field(title="Choice Logprobs")]
    reasoning: Annotated[dict[str, Any] | None, Field(title="Reasoning")]
    rounds: Annotated[list[dict[str, Any]] | None, Field(title="Rounds")]
    principle_ids: Annotated[list[str], Field(title="Principle Ids")]
    constitution_ref: Annotated[str, Field(title="Constitution Ref")]
    model: Annotated[str, Field(title="Model")]
    model_revision: Annotated[str, Field(title="Model Revision")]
    engine: Annotated[str, Field(title="Engine")]
    template_version: Annotated[str, Field(title="Template Version")]
    template_hash: Annotated[str, Field(title="Template Hash")]
    job_params: Annotated[dict[str, Any], Field(title="Job Params")]
    engine_config_hash: Annotated[str | None, Field(title="Engine Config Hash")]
    sampling_hash: Annotated[str | None, Field(title="Sampling Hash")]
    seed: Annotated[int, Field(title="Seed")]
    worker_id: Annotated[str, Field(title="Worker Id")]
    attempt: Annotated[int, Field(title="Attempt")]
    timings: Annotated[dict[str, Any], Field(title="Timings")]
    created_at: Annotated[AwareDatetime, Field(title="Created At")]


class Lease(BaseModel):
    """
    A lease-holder call: fenced on the claim's ``lease_token``, never on ``owner``.
    """

    model_config = ConfigDict(
        extra="allow",
    )
    lease_token: Annotated[LeaseToken | None, Field(title="Lease Token")] = None
    """
    Required: the lease_token of the claim; 409 when it is missing, wrong, or the lease was taken over.
    """
    owner: Annotated[Owner | None, Field(title="Owner")] = None
    """
    Not checked (anyone can read lease_owner); accepted so that a trainer that still sends it is told about lease_token.
    """


class LengthBiasOut(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    longer_wins: EstimateOut
    """
    Share of decided pairs whose longer response won (Wilson interval).
    """
    length_ties: Annotated[int, Field(title="Length Ties")]
    """
    Pairs left out: equal (or unknown) lengths.
    """
    label_ties: Annotated[int, Field(title="Label Ties")]
    """
    Pairs left out: label exactly 0.5.
    """
    correlation: Annotated[float | None, Field(title="Correlation")]
    """
    Pearson r of (p_a - 0.5) with (len_a - len_b); null when undefined.
    """
    correlation_n: Annotated[int, Field(title="Correlation N")]


class MetricOut(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    id: Annotated[int, Field(title="Id")]
    step: Annotated[int, Field(title="Step")]
    metrics: Annotated[dict[str, float], Field(title="Metrics")]
    created_at: Annotated[AwareDatetime, Field(title="Created At")]


class MetricPoint(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    step: Annotated[int, Field(ge=0, le=2147483647, title="Step")]
    metrics: Annotated[dict[str, float], Field(max_length=64, title="Metrics")]


class MetricsReport(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    lease_token: Annotated[LeaseToken | None, Field(title="Lease Token")] = None
    """
    Required: the lease_token of the claim; 409 when it is missing, wrong, or the lease was taken over.
    """
    owner: Annotated[Owner | None, Field(title="Owner")] = None
    """
    Not checked (anyone can read lease_owner); accepted so that a trainer that still sends it is told about lease_token.
    """
    points: Annotated[list[MetricPoint], Field(max_length=1000, min_length=1, title="Points")]


class MinuteCount(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    minute: Annotated[AwareDatetime, Field(title="Minute")]
    """
    Start of the bucket (UTC).
    """
    count: Annotated[int, Field(title="Count")]


class MixSpec(BaseModel):
    """
    Mix rows of another version (typically an upload) in at a stated share.
    """

    model_config = ConfigDict(
        extra="allow",
    )
    source: Annotated[str, Field(max_length=140, min_length=1, title="Source")]
    """
    name or name@version
    """
    ratio: Annotated[float, Field(gt=0.0, lt=1.0, title="Ratio")]
    """
    Share of the mixed rows in the new version's rows.
    """
    seed: Annotated[int | None, Field(ge=0, le=4611686018427388000, title="Seed")] = 0
    """
    Draws and interleaves the rows.
    """


class NotReady(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    status: Annotated[str, Field(title="Status")]
    """
    unavailable
    """
    detail: Annotated[str, Field(title="Detail")]
    """
    Which dependency failed.
    """


class MaxLength2(RootModel[int]):
    root: Annotated[int, Field(ge=2, title="Max Length")] = 1024
    """
    Pairs with a longer chosen or rejected sequence (in tokens) are dropped; null keeps all.
    """


class CenterRewardsCoefficient(RootModel[float]):
    root: Annotated[float, Field(ge=0.0, title="Center Rewards Coefficient")]
    """
    Weight of the mean-zero reward penalty (Eisenstein et al. 2023); null disables it.
    """


class PMConfig(BaseModel):
    """
    A preference-model run: the PM scores a conversation with one scalar reward.

    It learns from preference rows with the soft cross-entropy on the AI feedback label
    ``chosen_probability`` (Bai et al. 2022, §4.1: the feedback model's normalised
    probabilities are soft targets). ``soft_labels=False`` trains on the hard labels
    (``p = 1``), which is TRL's ``RewardTrainer`` loss.
    """

    model_config = ConfigDict(
        extra="allow",
    )
    learning_rate: Annotated[float | None, Field(gt=0.0, le=1.0, title="Learning Rate")] = 1e-05
    """
    Peak AdamW learning rate (conservative for a full fine-tune).
    """
    max_steps: Annotated[int | None, Field(ge=-1, title="Max Steps")] = -1
    """
    Optimizer steps to run (>= 1); -1 lets num_train_epochs decide.
    """
    num_train_epochs: Annotated[float | None, Field(ge=0.0, title="Num Train Epochs")] = 1.0
    """
    Passes over the training rows (> 0 unless max_steps is set); ignored when max_steps is set.
    """
    per_device_train_batch_size: Annotated[
        int | None, Field(ge=1, title="Per Device Train Batch Size")
    ] = 8
    """
    Preference pairs per device and step (each pair is two sequences).
    """
    gradient_accumulation_steps: Annotated[
        int | None, Field(ge=1, title="Gradient Accumulation Steps")
    ] = 1
    """
    Micro-batches accumulated into one optimizer step.
    """
    weight_decay: Annotated[float | None, Field(ge=0.0, title="Weight Decay")] = 0.0
    """
    AdamW decoupled weight decay.
    """
    warmup_steps: Annotated[float | None, Field(ge=0.0, title="Warmup Steps")] = 0.0
    """
    Linear warm-up: a step count (>= 1) or a fraction of all steps (< 1).
    """
    lr_scheduler_type: Annotated[LrSchedulerType | None, Field(title="Lr Scheduler Type")] = (
        "linear"
    )
    """
    Learning-rate schedule after warm-up.
    """
    max_grad_norm: Annotated[float | None, Field(gt=0.0, title="Max Grad Norm")] = 1.0
    """
    Gradient clipping norm.
    """
    seed: Annotated[int | None, Field(ge=0, le=4294967295, title="Seed")] = 42
    """
    Seed for the score head's initialisation, the data order and dropout.
    """
    bf16: Annotated[bool | None, Field(title="Bf16")] = False
    """
    bfloat16 mixed precision (needs hardware support).
    """
    gradient_checkpointing: Annotated[bool | None, Field(title="Gradient Checkpointing")] = False
    """
    Recompute activations in the backward pass: less memory, about 20% slower.
    """
    logging_steps: Annotated[int | None, Field(ge=1, title="Logging Steps")] = 10
    """
    Optimizer steps between two metric reports (not hashed).
    """
    save_steps: Annotated[SaveSteps | None, Field(title="Save Steps")] = None
    """
    Save a resumable checkpoint every this many steps (the last two are kept); null saves none (not hashed).
    """
    max_length: Annotated[MaxLength2 | None, Field(title="Max Length", validate_default=True)] = (
        1024
    )
    """
    Pairs with a longer chosen or rejected sequence (in tokens) are dropped; null keeps all.
    """
    eval_fraction: Annotated[float | None, Field(ge=0.0, lt=1.0, title="Eval Fraction")] = 0.1
    """
    Share of the dataset's rows held out for evaluation (a fixed split); 0 holds none out.
    """
    per_device_eval_batch_size: Annotated[
        int | None, Field(ge=1, title="Per Device Eval Batch Size")
    ] = 8
    """
    Pairs per device in evaluation (not hashed).
    """
    eval_steps: Annotated[EvalSteps | None, Field(title="Eval Steps")] = None
    """
    Evaluate on the held-out rows every this many steps; null evaluates at the end only (not hashed).
    """
    soft_labels: Annotated[bool | None, Field(title="Soft Labels")] = True
    """
    Train on chosen_probability; false trains as if every label were 1 (hard labels).
    """
    center_rewards_coefficient: Annotated[
        CenterRewardsCoefficient | None, Field(title="Center Rewards Coefficient")
    ] = None
    """
    Weight of the mean-zero reward penalty (Eisenstein et al. 2023); null disables it.
    """


class PMRunCreate(BaseModel):
    """
    A preference-model run on a preference dataset.
    """

    model_config = ConfigDict(
        extra="allow",
    )
    type: Annotated[Literal["pm"], Field(title="Type")]
    dataset: Annotated[str, Field(max_length=160, min_length=1, title="Dataset")]
    """
    Dataset name or name@version.
    """
    base_model: Annotated[
        str,
        Field(pattern="^(run:[0-9a-f]{32}|[A-Za-z0-9._/-]{1,128})$", title="Base Model"),
    ]
    """
    A model name the trainer serves (e.g. smollm2) or run:<id> of a finished run.
    """
    config: PMConfig | None = None
    """
    The pm run's hyper-parameters; what is left out takes its default, and the run stores them all. It may not set the fields beside config or dataset_version_id (422 naming config.<key>).
    """


class ValueHeadLearningRate(RootModel[float]):
    root: Annotated[float, Field(gt=0.0, title="Value Head Learning Rate")]
    """
    Value head step size; null uses learning_rate.
    """


class MaxGradNorm(RootModel[float]):
    root: Annotated[float, Field(gt=0.0, title="Max Grad Norm")] = 1.0
    """
    Global gradient-norm clip; null disables clipping.
    """


class SaveSteps4(RootModel[int]):
    root: Annotated[int, Field(ge=1, title="Save Steps")] = 50
    """
    Write a resumable checkpoint every this many steps (policy, value head, optimizer state, KL coefficient, random states), so a crashed run resumes from it; null writes none (not hashed).
    """


class PPOConfig(BaseModel):
    """
    The PPO stage of RL-CAI: the policy against a preference model, KL-penalised.

    Sizes are counted in sequences (prompt + sampled response); KL values are in nats
    per sequence. Every field but ``save_steps`` is hashed.
    """

    model_config = ConfigDict(
        extra="allow",
    )
    learning_rate: Annotated[float | None, Field(gt=0.0, title="Learning Rate")] = 1e-05
    """
    Adam step size for the policy (language model) weights.
    """
    value_head_learning_rate: Annotated[
        ValueHeadLearningRate | None, Field(title="Value Head Learning Rate")
    ] = None
    """
    Value head step size; null uses learning_rate.
    """
    adam_eps: Annotated[float | None, Field(gt=0.0, title="Adam Eps")] = 1e-05
    """
    Adam epsilon; 1e-5 as in the PPO reference code, not 1e-8.
    """
    max_grad_norm: Annotated[
        MaxGradNorm | None, Field(title="Max Grad Norm", validate_default=True)
    ] = 1.0
    """
    Global gradient-norm clip; null disables clipping.
    """
    seed: Annotated[int | None, Field(ge=0, le=4294967295, title="Seed")] = 0
    """
    Seeds the value-head init, sampling and minibatch shuffling.
    """
    batch_size: Annotated[int | None, Field(gt=0, title="Batch Size")] = 64
    """
    Prompts (and sampled responses) per rollout, i.e. per PPO step.
    """
    mini_batch_size: Annotated[int | None, Field(gt=0, title="Mini Batch Size")] = 16
    """
    Sequences per gradient step; must divide batch_size.
    """
    ppo_epochs: Annotated[int | None, Field(gt=0, title="Ppo Epochs")] = 4
    """
    Passes over each rollout, minibatches reshuffled every pass.
    """
    total_steps: Annotated[int | None, Field(gt=0, title="Total Steps")] = 1000
    """
    PPO steps (rollouts) to train.
    """
    save_steps: Annotated[SaveSteps4 | None, Field(title="Save Steps", validate_default=True)] = 50
    """
    Write a resumable checkpoint every this many steps (policy, value head, optimizer state, KL coefficient, random states), so a crashed run resumes from it; null writes none (not hashed).
    """
    max_prompt_length: Annotated[int | None, Field(gt=0, title="Max Prompt Length")] = 512
    """
    Longer prompts keep their last tokens (the generation prompt).
    """
    response_length: Annotated[int | None, Field(gt=0, title="Response Length")] = 64
    """
    Most tokens sampled per response (EOS included).
    """
    temperature: Annotated[float | None, Field(gt=0.0, title="Temperature")] = 1.0
    """
    Sampling temperature; logits are divided by it when sampling and when recomputing log-probs.
    """
    apply_chat_template: Annotated[bool | None, Field(title="Apply Chat Template")] = True
    """
    Wrap each prompt as a user turn with the chat template.
    """
    missing_eos_penalty: Annotated[float | None, Field(title="Missing Eos Penalty")] = -1.0
    """
    Score that replaces the reward model's for responses that hit response_length without an EOS (stops the policy gaming a PM that favours long, unfinished answers); null keeps the reward model's score.
    """
    cliprange: Annotated[float | None, Field(gt=0.0, title="Cliprange")] = 0.2
    """
    Policy ratio clip epsilon.
    """
    cliprange_value: Annotated[float | None, Field(gt=0.0, title="Cliprange Value")] = 0.2
    """
    Value predictions may move at most this far from the rollout values.
    """
    vf_coef: Annotated[float | None, Field(ge=0.0, title="Vf Coef")] = 0.1
    """
    Weight of the value loss; the value head shares the trunk.
    """
    gamma: Annotated[float | None, Field(gt=0.0, le=1.0, title="Gamma")] = 1.0
    """
    Discount; 1 because the episode is one response of bounded length.
    """
    lam: Annotated[float | None, Field(ge=0.0, le=1.0, title="Lam")] = 0.95
    """
    GAE lambda.
    """
    whiten_advantages: Annotated[bool | None, Field(title="Whiten Advantages")] = True
    """
    Normalise advantages over each rollout's response tokens.
    """
    init_kl_coef: Annotated[float | None, Field(ge=0.0, title="Init Kl Coef")] = 0.05
    """
    Starting KL coefficient (beta).
    """
    adaptive_kl: Annotated[bool | None, Field(title="Adaptive Kl")] = True
    """
    Adapt beta toward target_kl (Ziegler et al.); false keeps it fixed.
    """
    target_kl: Annotated[float | None, Field(gt=0.0, title="Target Kl")] = 6.0
    """
    Desired KL(policy || reference) per sequence, in nats.
    """
    kl_horizon: Annotated[int | None, Field(gt=0, title="Kl Horizon")] = 10000
    """
    Sequences over which beta may change by about e^0.2 at most.
    """


class ReferenceModel(RootModel[str]):
    root: Annotated[
        str,
        Field(
            pattern="^(run:[0-9a-f]{32}|[A-Za-z0-9._/-]{1,128})$",
            title="Reference Model",
        ),
    ]
    """
    The KL reference; default base_model.
    """


class PPORunCreate(BaseModel):
    """
    A PPO run against a completed PM run, on the prompts of an SFT or preference dataset.
    """

    model_config = ConfigDict(
        extra="allow",
    )
    type: Annotated[Literal["ppo"], Field(title="Type")]
    dataset: Annotated[str, Field(max_length=160, min_length=1, title="Dataset")]
    """
    Dataset name or name@version.
    """
    base_model: Annotated[
        str,
        Field(pattern="^(run:[0-9a-f]{32}|[A-Za-z0-9._/-]{1,128})$", title="Base Model"),
    ]
    """
    A model name the trainer serves (e.g. smollm2) or run:<id> of a finished run.
    """
    reward_run: Annotated[RewardRun | None, Field(title="Reward Run")] = None
    """
    Required: the completed PM run to optimise.
    """
    reference_model: Annotated[ReferenceModel | None, Field(title="Reference Model")] = None
    """
    The KL reference; default base_model.
    """
    config: PPOConfig | None = None
    """
    The ppo run's hyper-parameters; what is left out takes its default, and the run stores them all. It may not set the fields beside config or dataset_version_id (422 naming config.<key>).
    """


class PageAuditEventOut(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    items: Annotated[list[AuditEventOut], Field(title="Items")]
    next_cursor: Annotated[str | None, Field(title="Next Cursor")] = None


class PageBatchOut(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    items: Annotated[list[BatchOut], Field(title="Items")]
    next_cursor: Annotated[str | None, Field(title="Next Cursor")] = None


class PageDatasetVersionOut(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    items: Annotated[list[DatasetVersionOut], Field(title="Items")]
    next_cursor: Annotated[str | None, Field(title="Next Cursor")] = None


class PageDeliveryOut(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    items: Annotated[list[DeliveryOut], Field(title="Items")]
    next_cursor: Annotated[str | None, Field(title="Next Cursor")] = None


class PageEndpointOut(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    items: Annotated[list[EndpointOut], Field(title="Items")]
    next_cursor: Annotated[str | None, Field(title="Next Cursor")] = None


class PageGoldItemOut(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    items: Annotated[list[GoldItemOut], Field(title="Items")]
    next_cursor: Annotated[str | None, Field(title="Next Cursor")] = None


class PageLabelOut(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    items: Annotated[list[LabelOut], Field(title="Items")]
    next_cursor: Annotated[str | None, Field(title="Next Cursor")] = None


class PageMetricOut(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    items: Annotated[list[MetricOut], Field(title="Items")]
    next_cursor: Annotated[str | None, Field(title="Next Cursor")] = None


class ParticipantOut(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    id: Annotated[str, Field(title="Id")]
    group: Annotated[int | None, Field(title="Group")]
    x: Annotated[float | None, Field(title="X")]
    y: Annotated[float | None, Field(title="Y")]
    n_votes: Annotated[int, Field(title="N Votes")]


class RlPrompts(RootModel[str]):
    root: Annotated[str, Field(max_length=32, min_length=1, title="Rl Prompts")]
    """
    The RL-CAI batch (the SFT model answers each twice and compares); default: prompts.
    """


class EvalPrompts(RootModel[str]):
    root: Annotated[str, Field(max_length=32, min_length=1, title="Eval Prompts")]
    """
    The Elo evaluation's batch (held-out prompts); default: rl_prompts.
    """


class PipelineState(StrEnum):
    active = "active"
    completed = "completed"
    failed = "failed"
    cancelled = "cancelled"


class Plot1(RootModel[tuple[str, str]]):
    root: Annotated[tuple[str, str], Field(max_length=2, min_length=2, title="Plot")]
    """
    The judges on the plot's x and y axes; by default helpfulness against harmlessness when both are judged, else the first two.
    """


class Role1(StrEnum):
    generate = "generate"
    compare = "compare"


class PolicyEvalJobOut(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    role: Annotated[Role1, Field(title="Role")]
    name: Annotated[str, Field(title="Name")]
    job_id: Annotated[str, Field(title="Job Id")]
    status: JobStatus
    counts: Annotated[dict[str, int], Field(title="Counts")]


class Stage(StrEnum):
    generating = "generating"
    comparing = "comparing"
    failed = "failed"
    cancelled = "cancelled"


class Status(StrEnum):
    queued = "queued"
    running = "running"
    completed = "completed"
    cancelled = "cancelled"
    failed = "failed"


class PolicyEvalOut(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    id: Annotated[str, Field(title="Id")]
    name: Annotated[str, Field(title="Name")]
    batch_id: Annotated[str, Field(title="Batch Id")]
    stage: Annotated[Stage, Field(title="Stage")]
    status: Annotated[Status, Field(title="Status")]
    error: Annotated[str | None, Field(title="Error")]
    policies: Annotated[list[dict[str, Any]], Field(title="Policies")]
    judges: Annotated[list[dict[str, Any]], Field(title="Judges")]
    anchor: Annotated[str, Field(title="Anchor")]
    plot: Annotated[list[str] | None, Field(title="Plot")]
    bootstrap: Annotated[int, Field(title="Bootstrap")]
    seed: Annotated[int, Field(title="Seed")]
    pairs_batch_id: Annotated[str | None, Field(title="Pairs Batch Id")]
    comparisons: Annotated[int | None, Field(title="Comparisons")]
    jobs: Annotated[list[PolicyEvalJobOut], Field(title="Jobs")]
    items_total: Annotated[int, Field(title="Items Total")]
    items_finished: Annotated[int, Field(title="Items Finished")]
    created_at: Annotated[AwareDatetime, Field(title="Created At")]
    advanced_at: Annotated[AwareDatetime | None, Field(title="Advanced At")]


class SystemPrompt1(StrEnum):
    """
    'constitution': the model is told its constitution (the paper's missing baseline: the base model, prompted with the constitution).
    """

    default = "default"
    constitution = "constitution"


class Constitution1(RootModel[str]):
    root: Annotated[str, Field(max_length=80, min_length=1, title="Constitution")]
    """
    The constitution its generate job names (and tells it, with system_prompt 'constitution'); the first judge's if omitted.
    """


class PolisUpload(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    format: Annotated[Literal["polis"], Field(title="Format")]
    comments: Annotated[str, Field(title="Comments")]
    """
    A Polis export's comments.csv. The file's text. A string is held to the gateway's max_string_chars (1 MB by 
    """
    participants_votes: Annotated[str, Field(title="Participants Votes")]
    """
    A Polis export's participants-votes.csv. The file's text. A string is held to the gateway's max_string_chars (1 MB by 
    """


class MinConfidence1(RootModel[float]):
    root: Annotated[float, Field(ge=0.5, le=1.0, title="Min Confidence")]


class PreferenceDataStage(BaseModel):
    """
    The preference dataset: the RL-CAI labels, optionally filtered.
    """

    model_config = ConfigDict(
        extra="allow",
    )
    min_confidence: Annotated[MinConfidence1 | None, Field(title="Min Confidence")] = None
    exclude_swap_disagreements: Annotated[
        bool | None, Field(title="Exclude Swap Disagreements")
    ] = False


class Role2(StrEnum):
    user = "user"
    assistant = "assistant"
    system = "system"


class PreviewMessage(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    role: Annotated[Role2, Field(title="Role")]
    content: Annotated[str, Field(max_length=65536, title="Content")]


class PrincipleChange(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    id: Annotated[str, Field(title="Id")]
    before: Annotated[dict[str, Any], Field(title="Before")]
    after: Annotated[dict[str, Any], Field(title="After")]


class PrincipleSetDiff(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    added: Annotated[list[dict[str, Any]] | None, Field(title="Added")] = []
    removed: Annotated[list[dict[str, Any]] | None, Field(title="Removed")] = []
    changed: Annotated[
        list[PrincipleChange] | None, Field(title="Changed", validate_default=True)
    ] = []


class PromptOut(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    id: Annotated[int, Field(title="Id")]
    position: Annotated[int, Field(title="Position")]
    prompt: Annotated[str | None, Field(title="Prompt")]
    messages: Annotated[list[dict[str, str]] | None, Field(title="Messages")]
    response: Annotated[str | None, Field(title="Response")]
    response_a: Annotated[str | None, Field(title="Response A")]
    response_b: Annotated[str | None, Field(title="Response B")]


class PromptRow1(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    response_a: Annotated[None, Field(None)] = None
    response_b: Annotated[None, Field(None)] = None


class PromptRow2(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    messages: list[Any]


class PromptRow3(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    response_a: str
    response_b: str


class Prompt1(RootModel[str]):
    root: Annotated[str, Field(max_length=32000, min_length=1, title="Prompt")]


class Messages(RootModel[list[ChatMessage]]):
    root: Annotated[list[ChatMessage], Field(max_length=64, min_length=1, title="Messages")]


class Response1(RootModel[str]):
    root: Annotated[str, Field(max_length=32000, title="Response")]


class ResponseA(RootModel[str]):
    root: Annotated[str, Field(max_length=32000, title="Response A")]


class ResponseB(RootModel[str]):
    root: Annotated[str, Field(max_length=32000, title="Response B")]


class PromptRow4(BaseModel):
    """
    A prompt (plain text or chat messages) with optional supplied responses.
    """

    model_config = ConfigDict(
        extra="allow",
    )
    prompt: Annotated[Prompt1 | None, Field(title="Prompt")] = None
    messages: Annotated[Messages | None, Field(title="Messages")] = None
    response: Annotated[Response1 | None, Field(title="Response")] = None
    response_a: Annotated[ResponseA | None, Field(title="Response A")] = None
    response_b: Annotated[ResponseB | None, Field(title="Response B")] = None


class PromptRow5(PromptRow1, PromptRow4):
    """
    A prompt (plain text or chat messages) with optional supplied responses.
    """

    model_config = ConfigDict(
        extra="allow",
    )
    prompt: Annotated[Prompt1 | None, Field(title="Prompt")] = None
    messages: Annotated[Messages | None, Field(title="Messages")] = None
    response: Annotated[Response1 | None, Field(title="Response")] = None
    response_a: Annotated[ResponseA | None, Field(title="Response A")] = None
    response_b: Annotated[ResponseB | None, Field(title="Response B")] = None


class PromptRow6(PromptRow2, PromptRow4):
    """
    A prompt (plain text or chat messages) with optional supplied responses.
    """

    model_config = ConfigDict(
        extra="allow",
    )
    prompt: Annotated[Prompt1 | None, Field(title="Prompt")] = None
    messages: Annotated[Messages | None, Field(title="Messages")]
    response: Annotated[Response1 | None, Field(title="Response")] = None
    response_a: Annotated[ResponseA | None, Field(title="Response A")] = None
    response_b: Annotated[ResponseB | None, Field(title="Response B")] = None


class PromptRow7(PromptRow1, PromptRow4):
    """
    A prompt (plain text or chat messages) with optional supplied responses.
    """

    model_config = ConfigDict(
        extra="allow",
    )
    prompt: Annotated[Prompt1 | None, Field(title="Prompt")] = None
    messages: Annotated[Messages | None, Field(title="Messages")] = None
    response: Annotated[Response1 | None, Field(title="Response")] = None
    response_a: Annotated[ResponseA | None, Field(title="Response A")] = None
    response_b: Annotated[ResponseB | None, Field(title="Response B")] = None


class PromptRow8(PromptRow3, PromptRow4):
    """
    A prompt (plain text or chat messages) with optional supplied responses.
    """

    model_config = ConfigDict(
        extra="allow",
    )
    prompt: Annotated[Prompt1 | None, Field(title="Prompt")] = None
    messages: Annotated[Messages | None, Field(title="Messages")] = None
    response: Annotated[Response1 | None, Field(title="Response")] = None
    response_a: Annotated[ResponseA | None, Field(title="Response A")]
    response_b: Annotated[ResponseB | None, Field(title="Response B")]


class PromptRow(RootModel[PromptRow5 | PromptRow6 | PromptRow7 | PromptRow8]):
    """
    A prompt (plain text or chat messages) with optional supplied responses.
    """

    root: Annotated[PromptRow5 | PromptRow6 | PromptRow7 | PromptRow8, Field(title="PromptRow")]
    """
    A prompt (plain text or chat messages) with optional supplied responses.
    """


class PublicInputOut(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    id: Annotated[str, Field(title="Id")]
    name: Annotated[str, Field(title="Name")]
    version: Annotated[int, Field(title="Version")]
    ref: Annotated[str, Field(title="Ref")]
    source_format: Annotated[str, Field(title="Source Format")]
    statement_count: Annotated[int, Field(title="Statement Count")]
    participant_count: Annotated[int, Field(title="Participant Count")]
    vote_count: Annotated[int, Field(title="Vote Count")]
    content_hash: Annotated[str, Field(title="Content Hash")]
    created_at: Annotated[AwareDatetime, Field(title="Created At")]
    created: Annotated[bool | None, Field(title="Created")] = None


class Strategy(StrEnum):
    random = "random"
    stratified = "stratified"


class By(StrEnum):
    """
    Strata of a stratified sample: principle; confidence (bins of |P(A)-0.5|, comparison jobs); swap_disagreement (whether the two orders disagreed, swapped comparisons). With random, it only restricts the labels to those it applies to.
    """

    principle = "principle"
    confidence = "confidence"
    swap_disagreement = "swap_disagreement"


class Seed4(RootModel[int]):
    root: Annotated[int, Field(ge=0, le=4611686018427388000, title="Seed")]
    """
    The same seed draws the same labels; default 0.
    """


class QueueCreate(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    size: Annotated[int, Field(ge=1, le=1000, title="Size")]
    """
    Labels to review (capped by the job's).
    """
    strategy: Annotated[Strategy | None, Field(title="Strategy")] = "random"
    by: Annotated[By | None, Field(title="By")] = None
    """
    Strata of a stratified sample: principle; confidence (bins of |P(A)-0.5|, comparison jobs); swap_disagreement (whether the two orders disagreed, swapped comparisons). With random, it only restricts the labels to those it applies to.
    """
    seed: Annotated[Seed4 | None, Field(title="Seed")] = None
    """
    The same seed draws the same labels; default 0.
    """


class QueueDepth(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    model: Annotated[str, Field(title="Model")]
    state: ItemState
    count: Annotated[int, Field(title="Count")]


class QueueOut(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    id: Annotated[str, Field(title="Id")]
    job_id: Annotated[str, Field(title="Job Id")]
    job_type: Annotated[str, Field(title="Job Type")]
    strategy: Annotated[str, Field(title="Strategy")]
    by: Annotated[str | None, Field(title="By")]
    seed: Annotated[int, Field(title="Seed")]
    size: Annotated[int, Field(title="Size")]
    """
    Items in the queue.
    """
    requested_size: Annotated[int, Field(title="Requested Size")]
    reviewed: Annotated[int, Field(title="Reviewed")]
    """
    Items with at least one verdict.
    """
    strata: Annotated[dict[str, int], Field(title="Strata")]
    """
    Items per stratum (empty for a plain sample).
    """
    target_reached_at: Annotated[AwareDatetime | None, Field(title="Target Reached At")]
    created_at: Annotated[AwareDatetime, Field(title="Created At")]
    items: Annotated[list[int], Field(title="Items")]
    """
    The queue's label ids, in queue order.
    """


class SaveSteps5(RootModel[int]):
    root: Annotated[int, Field(ge=1, title="Save Steps")]
    """
    Save a resumable checkpoint every this many steps (the last two are kept); null saves none (not hashed).
    """


class RLOOConfig(BaseModel):
    """
    An RLOO run (Ahmadian et al. 2024): REINFORCE with each completion's baseline the
    mean reward of the other completions of its prompt; the KL penalty is in the reward.
    """

    model_config = ConfigDict(
        extra="allow",
    )
    learning_rate: Annotated[float | None, Field(gt=0.0, le=1.0, title="Learning Rate")] = 1e-06
    """
    Peak AdamW learning rate (TRL's default).
    """
    max_steps: Annotated[int | None, Field(ge=-1, title="Max Steps")] = 500
    """
    Optimizer steps to run (>= 1); -1 lets num_train_epochs decide.
    """
    num_train_epochs: Annotated[float | None, Field(ge=0.0, title="Num Train Epochs")] = 1.0
    """
    Passes over the training rows (> 0 unless max_steps is set); ignored when max_steps is set.
    """
    per_device_train_batch_size: Annotated[
        int | None, Field(ge=1, title="Per Device Train Batch Size")
    ] = 8
    """
    Completions per device and micro-batch; with gradient_accumulation_steps a multiple of num_generations.
    """
    gradient_accumulation_steps: Annotated[
        int | None, Field(ge=1, title="Gradient Accumulation Steps")
    ] = 1
    """
    Micro-batches accumulated into one optimizer step.
    """
    weight_decay: Annotated[float | None, Field(ge=0.0, title="Weight Decay")] = 0.0
    """
    AdamW decoupled weight decay.
    """
    warmup_steps: Annotated[float | None, Field(ge=0.0, title="Warmup Steps")] = 0.0
    """
    Linear warm-up: a step count (>= 1) or a fraction of all steps (< 1).
    """
    lr_scheduler_type: Annotated[LrSchedulerType | None, Field(title="Lr Scheduler Type")] = (
        "linear"
    )
    """
    Learning-rate schedule after warm-up.
    """
    max_grad_norm: Annotated[float | None, Field(gt=0.0, title="Max Grad Norm")] = 1.0
    """
    Gradient clipping norm.
    """
    seed: Annotated[int | None, Field(ge=0, le=4294967295, title="Seed")] = 42
    """
    Seed for the data order and dropout.
    """
    bf16: Annotated[bool | None, Field(title="Bf16")] = False
    """
    bfloat16 mixed precision (needs hardware support).
    """
    gradient_checkpointing: Annotated[bool | None, Field(title="Gradient Checkpointing")] = False
    """
    Recompute activations in the backward pass: less memory, about 20% slower.
    """
    logging_steps: Annotated[int | None, Field(ge=1, title="Logging Steps")] = 10
    """
    Optimizer steps between two metric reports (not hashed).
    """
    save_steps: Annotated[SaveSteps5 | None, Field(title="Save Steps")] = None
    """
    Save a resumable checkpoint every this many steps (the last two are kept); null saves none (not hashed).
    """
    num_generations: Annotated[int | None, Field(ge=2, title="Num Generations")] = 4
    """
    Completions sampled per prompt: the group each one is compared with.
    """
    max_completion_length: Annotated[int | None, Field(ge=1, title="Max Completion Length")] = 64
    """
    Most tokens sampled per completion.
    """
    temperature: Annotated[float | None, Field(gt=0.0, title="Temperature")] = 1.0
    """
    Sampling temperature.
    """
    beta: Annotated[float | None, Field(ge=0.0, title="Beta")] = 0.05
    """
    KL coefficient towards the starting policy; 0 loads no reference model.
    """
    epsilon: Annotated[float | None, Field(gt=0.0, title="Epsilon")] = 0.2
    """
    Policy ratio clip epsilon.
    """
    num_iterations: Annotated[int | None, Field(ge=1, title="Num Iterations")] = 1
    """
    Updates on each batch of completions before sampling again.
    """
    normalize_advantages: Annotated[bool | None, Field(title="Normalize Advantages")] = False
    """
    Scale advantages to unit variance over the batch.
    """


class RLOORunCreate(BaseModel):
    """
    An RLOO run (TRL) against a completed PM run, on the prompts of an SFT or preference
    dataset; the KL reference is base_model.
    """

    model_config = ConfigDict(
        extra="allow",
    )
    type: Annotated[Literal["rloo"], Field(title="Type")]
    dataset: Annotated[str, Field(max_length=160, min_length=1, title="Dataset")]
    """
    Dataset name or name@version.
    """
    base_model: Annotated[
        str,
        Field(pattern="^(run:[0-9a-f]{32}|[A-Za-z0-9._/-]{1,128})$", title="Base Model"),
    ]
    """
    A model name the trainer serves (e.g. smollm2) or run:<id> of a finished run.
    """
    reward_run: Annotated[RewardRun | None, Field(title="Reward Run")] = None
    """
    Required: the completed PM run to optimise.
    """
    config: RLOOConfig | None = None
    """
    The rloo run's hyper-parameters; what is left out takes its default, and the run stores them all. It may not set the fields beside config or dataset_version_id (422 naming config.<key>).
    """


class RateOut(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    agreed: Annotated[int, Field(title="Agreed")]
    n: Annotated[int, Field(title="N")]
    rate: Annotated[float | None, Field(title="Rate")]
    low: Annotated[float | None, Field(title="Low")]
    """
    Wilson 95% interval.
    """
    high: Annotated[float | None, Field(title="High")]


class RatingOut(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    policy: Annotated[str, Field(title="Policy")]
    elo: Annotated[float, Field(title="Elo")]
    low: Annotated[float, Field(title="Low")]
    high: Annotated[float, Field(title="High")]
    comparisons: Annotated[int, Field(title="Comparisons")]
    wins: Annotated[float, Field(title="Wins")]


class Ready(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    status: Annotated[str, Field(title="Status")]
    """
    ready
    """


class ReasonCount(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    reason: Annotated[str, Field(title="Reason")]
    """
    The item's last error, numbers as '#', at most 120 chars.
    """
    count: Annotated[int, Field(title="Count")]


class RenderOut(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    messages: Annotated[list[dict[str, str]], Field(title="Messages")]
    answer_prefix: Annotated[str, Field(title="Answer Prefix")]


class RenderRequest(BaseModel):
    """
    A preview: the prompt a comparison would get, with the answer cue appended.
    """

    model_config = ConfigDict(
        extra="allow",
    )
    conversation: Annotated[
        list[PreviewMessage], Field(max_length=64, min_length=1, title="Conversation")
    ]
    principle: Annotated[str, Field(max_length=4000, min_length=1, title="Principle")]
    response_a: Annotated[str, Field(max_length=65536, title="Response A")]
    response_b: Annotated[str, Field(max_length=65536, title="Response B")]
    chain_of_thought: Annotated[bool | None, Field(title="Chain Of Thought")] = False


class Seed5(RootModel[int]):
    root: Annotated[int, Field(ge=0, le=4611686018427388000, title="Seed")]


class RequestsJobCreate(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    constitution: Annotated[str, Field(max_length=80, min_length=1, title="Constitution")]
    """
    A constitution with a `classifier` section (name or name@version): its categories are what the requests are written for, and the job runs under it.
    """
    model: Annotated[
        str | None,
        Field(
            max_length=128,
            min_length=1,
            pattern="^(run:[0-9a-f]{32}|[A-Za-z0-9._/-]+)$",
            title="Model",
        ),
    ] = "smollm2"
    """
    The model that writes the synthetic data.
    """
    per_category: Annotated[int | None, Field(ge=1, le=2000, title="Per Category")] = 50
    """
    Requests written for each category.
    """
    max_tokens: Annotated[int | None, Field(ge=8, le=1024, title="Max Tokens")] = 96
    """
    Tokens per request.
    """
    temperature: Annotated[float | None, Field(ge=0.0, le=2.0, title="Temperature")] = 1.0
    """
    Sampling temperature (variety across requests).
    """
    seed: Annotated[Seed5 | None, Field(title="Seed")] = None


class RerunRequest(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    stage: Annotated[str, Field(max_length=16, min_length=1, title="Stage")]
    """
    Supersede this stage and every stage downstream of it, and run them again from the current outputs of the others.
    """


class Model(RootModel[str]):
    root: Annotated[
        str,
        Field(
            max_length=128,
            min_length=1,
            pattern="^(run:[0-9a-f]{32}|[A-Za-z0-9._/-]+)$",
            title="Model",
        ),
    ]
    """
    The model that paraphrases, answers and refuses; default: the requests job's.
    """


class ResponsesJobCreate(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    requests_job: Annotated[str, Field(max_length=64, min_length=1, title="Requests Job")]
    """
    A finished requests job (POST .../requests).
    """
    model: Annotated[Model | None, Field(title="Model")] = None
    """
    The model that paraphrases, answers and refuses; default: the requests job's.
    """
    max_tokens: Annotated[int | None, Field(ge=8, le=2048, title="Max Tokens")] = 160
    """
    Tokens per response.
    """
    seed: Annotated[Seed5 | None, Field(title="Seed")] = None


class RunStageDPOConfig(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    config: DPOConfig


class RunStageGRPOConfig(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    config: GRPOConfig


class RunStagePMConfig(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    config: PMConfig


class RunStagePPOConfig(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    config: PPOConfig


class RunStageRLOOConfig(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    config: RLOOConfig


class RunStatus(StrEnum):
    """
    A training run's status.
    """

    queued = "queued"
    running = "running"
    completed = "completed"
    failed = "failed"
    cancelled = "cancelled"


class MaxLength3(RootModel[int]):
    root: Annotated[int, Field(ge=2, title="Max Length")] = 1024
    """
    Sequences are truncated to this many tokens (keeping the start); null keeps all.
    """


class SFTConfig(BaseModel):
    """
    A supervised fine-tuning run (SL-CAI, Bai et al. 2022, §3): each row is a
    conversation ``prompt`` and the revised assistant ``completion``.
    """

    model_config = ConfigDict(
        extra="allow",
    )
    learning_rate: Annotated[float | None, Field(gt=0.0, le=1.0, title="Learning Rate")] = 2e-05
    """
    Peak AdamW learning rate (TRL's SFT default).
    """
    max_steps: Annotated[int | None, Field(ge=-1, title="Max Steps")] = -1
    """
    Optimizer steps to run (>= 1); -1 lets num_train_epochs decide.
    """
    num_train_epochs: Annotated[float | None, Field(ge=0.0, title="Num Train Epochs")] = 1.0
    """
    Passes over the training rows (> 0 unless max_steps is set); ignored when max_steps is set.
    """
    per_device_train_batch_size: Annotated[
        int | None, Field(ge=1, title="Per Device Train Batch Size")
    ] = 8
    """
    Sequences per device and micro-batch.
    """
    gradient_accumulation_steps: Annotated[
        int | None, Field(ge=1, title="Gradient Accumulation Steps")
    ] = 1
    """
    Micro-batches accumulated into one optimizer step.
    """
    weight_decay: Annotated[float | None, Field(ge=0.0, title="Weight Decay")] = 0.0
    """
    AdamW decoupled weight decay.
    """
    warmup_steps: Annotated[float | None, Field(ge=0.0, title="Warmup Steps")] = 0.0
    """
    Linear warm-up: a step count (>= 1) or a fraction of all steps (< 1).
    """
    lr_scheduler_type: Annotated[LrSchedulerType | None, Field(title="Lr Scheduler Type")] = (
        "linear"
    )
    """
    Learning-rate schedule after warm-up.
    """
    max_grad_norm: Annotated[float | None, Field(gt=0.0, title="Max Grad Norm")] = 1.0
    """
    Gradient clipping norm.
    """
    seed: Annotated[int | None, Field(ge=0, le=4294967295, title="Seed")] = 42
    """
    Seed for the data order and dropout.
    """
    bf16: Annotated[bool | None, Field(title="Bf16")] = False
    """
    bfloat16 mixed precision (needs hardware support).
    """
    gradient_checkpointing: Annotated[bool | None, Field(title="Gradient Checkpointing")] = False
    """
    Recompute activations in the backward pass: less memory, about 20% slower.
    """
    logging_steps: Annotated[int | None, Field(ge=1, title="Logging Steps")] = 10
    """
    Optimizer steps between two metric reports (not hashed).
    """
    save_steps: Annotated[SaveSteps5 | None, Field(title="Save Steps")] = None
    """
    Save a resumable checkpoint every this many steps (the last two are kept); null saves none (not hashed).
    """
    max_length: Annotated[MaxLength3 | None, Field(title="Max Length", validate_default=True)] = (
        1024
    )
    """
    Sequences are truncated to this many tokens (keeping the start); null keeps all.
    """
    eval_fraction: Annotated[float | None, Field(ge=0.0, lt=1.0, title="Eval Fraction")] = 0.1
    """
    Share of the dataset's rows held out for evaluation (a fixed split); 0 holds none out.
    """
    per_device_eval_batch_size: Annotated[
        int | None, Field(ge=1, title="Per Device Eval Batch Size")
    ] = 8
    """
    Sequences per device in evaluation (not hashed).
    """
    eval_steps: Annotated[EvalSteps | None, Field(title="Eval Steps")] = None
    """
    Evaluate on the held-out rows every this many steps; null evaluates at the end only (not hashed).
    """
    completion_only_loss: Annotated[bool | None, Field(title="Completion Only Loss")] = True
    """
    Loss on the assistant completion only; false also trains on the prompt tokens.
    """


class SFTDataStage(BaseModel):
    """
    The SFT dataset: the SL-CAI revisions, optionally mixed with helpfulness data.
    """

    model_config = ConfigDict(
        extra="allow",
    )
    mix: MixSpec | None = None
    """
    Rows of another SFT dataset (e.g. uploaded helpful conversations) mixed in at a share, as the paper mixes helpfulness data into SL-CAI's.
    """


class SFTRunCreate(BaseModel):
    """
    A supervised fine-tuning run on an SFT dataset.
    """

    model_config = ConfigDict(
        extra="allow",
    )
    type: Annotated[Literal["sft"], Field(title="Type")]
    dataset: Annotated[str, Field(max_length=160, min_length=1, title="Dataset")]
    """
    Dataset name or name@version.
    """
    base_model: Annotated[
        str,
        Field(pattern="^(run:[0-9a-f]{32}|[A-Za-z0-9._/-]{1,128})$", title="Base Model"),
    ]
    """
    A model name the trainer serves (e.g. smollm2) or run:<id> of a finished run.
    """
    config: SFTConfig | None = None
    """
    The sft run's hyper-parameters; what is left out takes its default, and the run stores them all. It may not set the fields beside config or dataset_version_id (422 naming config.<key>).
    """


class SamplingParams(BaseModel):
    """
    How a job samples its generated text (responses, critiques, revisions, reasoning).

    The one sampling type: a job's ``params.sampling`` (validated at the API, whose
    bounds these are) is what the pipelines hand to ``Engine.generate``. The sampler's
    seed is not part of it: each call gets its own, derived from the job's seed and
    the call's purpose (``charter.core.pipelines``), and is passed next to these
    parameters. So :meth:`compute_hash`, which every label whose job sampled records
    as ``sampling_hash``, is the hash of the job-level parameters and the same for
    every label of a job; the job's seed is recorded separately (``labels.seed``).
    """

    model_config = ConfigDict(
        extra="allow",
    )
    max_tokens: Annotated[int | None, Field(ge=1, le=4096, title="Max Tokens")] = 192
    """
    Upper bound on generated tokens per sequence.
    """
    temperature: Annotated[float | None, Field(ge=0.0, le=2.0, title="Temperature")] = 0.7
    """
    0 means greedy decoding; > 0 samples from the softened distribution.
    """
    top_p: Annotated[float | None, Field(gt=0.0, le=1.0, title="Top P")] = 0.95
    """
    Nucleus sampling mass; 1.0 disables it.
    """


class Kind2(StrEnum):
    job = "job"
    dataset = "dataset"
    run = "run"
    policy_eval = "policy_eval"


class StageStatus(StrEnum):
    """
    One attempt of a stage. A stage with no attempt yet is pending.
    """

    submitted = "submitted"
    completed = "completed"
    failed = "failed"
    cancelled = "cancelled"
    superseded = "superseded"


class StatementOut(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    id: Annotated[str, Field(title="Id")]
    text: Annotated[str, Field(title="Text")]
    consensus: Annotated[float, Field(title="Consensus")]
    """
    Product over groups of P(agree).
    """
    disagree_consensus: Annotated[float, Field(title="Disagree Consensus")]
    divisiveness: Annotated[float, Field(title="Divisiveness")]
    """
    Half the spread of the groups' net lean, [0, 1).
    """
    groups: Annotated[list[GroupVotesOut], Field(title="Groups")]
    candidate: Annotated[bool, Field(title="Candidate")]
    """
    Every group agrees at least min_group_agreement.
    """
    divisive: Annotated[bool, Field(title="Divisive")]
    """
    divisiveness >= divisive_threshold.
    """


class Format(StrEnum):
    chat = "chat"
    plain = "plain"


class System(RootModel[str]):
    root: Annotated[str, Field(max_length=4096, title="System")]


class TemplateCreate(BaseModel):
    """
    A feedback template (see docs/TEMPLATES.md): a sandboxed Jinja2 question and the
    answer cues the platform appends. Fields left out take the shipped defaults.
    """

    model_config = ConfigDict(
        extra="allow",
    )
    name: Annotated[str, Field(max_length=32, pattern="^[a-z][a-z0-9-]{0,31}$", title="Name")]
    description: Annotated[str | None, Field(max_length=1024, title="Description")] = ""
    format: Annotated[Format | None, Field(title="Format")] = "chat"
    system: Annotated[System | None, Field(title="System")] = None
    question: Annotated[str, Field(max_length=16384, min_length=1, title="Question")]
    instruction: Annotated[str | None, Field(max_length=4096, title="Instruction")] = (
        "Answer with the letter of the better response."
    )
    cot_instruction: Annotated[str | None, Field(max_length=4096, title="Cot Instruction")] = (
        "Think it through step by step in a few sentences, then say which response is better."
    )
    answer_prefix: Annotated[
        str | None,
        Field(max_length=256, pattern="^[\\s\\S]*\\($", title="Answer Prefix"),
    ] = "The answer is: ("
    cot_answer_prefix: Annotated[
        str | None,
        Field(max_length=256, pattern="^[\\s\\S]*\\($", title="Cot Answer Prefix"),
    ] = "\n\nTherefore, the answer is: ("
    delimiters: Annotated[list[str] | None, Field(max_length=32, title="Delimiters")] = None
    separator: Annotated[str | None, Field(max_length=64, title="Separator")] = "\n\n"
    reasoning_lead: Annotated[str | None, Field(max_length=64, title="Reasoning Lead")] = ""


class TemplateOut(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    name: Annotated[str, Field(title="Name")]
    version: Annotated[int | None, Field(title="Version")]
    ref: Annotated[str, Field(title="Ref")]
    built_in: Annotated[bool, Field(title="Built In")]
    sha256: Annotated[str, Field(title="Sha256")]
    spec: Annotated[dict[str, Any], Field(title="Spec")]
    created_at: Annotated[AwareDatetime | None, Field(title="Created At")] = None
    created: Annotated[bool | None, Field(title="Created")] = None


class UnservedJob(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    job_id: Annotated[str, Field(title="Job Id")]
    type: JobType
    model: Annotated[str, Field(title="Model")]
    created_at: Annotated[AwareDatetime, Field(title="Created At")]


class Choice(StrEnum):
    """
    Comparisons: A, B or tie.
    """

    A = "A"
    B = "B"
    tie = "tie"


class Note(RootModel[str]):
    root: Annotated[str, Field(max_length=2000, title="Note")]


class VerdictCreate(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    choice: Annotated[Choice | None, Field(title="Choice")] = None
    """
    Comparisons: A, B or tie.
    """
    satisfies: Annotated[bool | None, Field(title="Satisfies")] = None
    """
    Revisions: does the revision satisfy the principle?
    """
    note: Annotated[Note | None, Field(title="Note")] = None
    reviewer: Annotated[str | None, Field(max_length=128, title="Reviewer")] = ""
    """
    The person's name, when one key is shared by several reviewers.
    """


class Choice1(StrEnum):
    A = "A"
    B = "B"
    tie = "tie"


class VerdictOut(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    id: Annotated[int, Field(title="Id")]
    label_id: Annotated[int, Field(title="Label Id")]
    queue_id: Annotated[str | None, Field(title="Queue Id")]
    api_key_id: Annotated[str, Field(title="Api Key Id")]
    key_prefix: Annotated[str, Field(title="Key Prefix")]
    reviewer: Annotated[str, Field(title="Reviewer")]
    choice: Annotated[Choice1 | None, Field(title="Choice")]
    satisfies: Annotated[bool | None, Field(title="Satisfies")]
    note: Annotated[str | None, Field(title="Note")]
    agrees: Annotated[bool, Field(title="Agrees")]
    """
    Whether the verdict matches the AI label.
    """
    source: Annotated[str, Field(title="Source")]
    revision: Annotated[int, Field(title="Revision")]
    """
    1 for a first verdict; each replacement adds one.
    """
    replaced: Annotated[bool | None, Field(title="Replaced")] = False
    """
    This request replaced an earlier verdict.
    """
    history: Annotated[list[dict[str, Any]], Field(title="History")]
    """
    The reviewer's earlier verdicts.
    """
    created_at: Annotated[AwareDatetime, Field(title="Created At")]
    updated_at: Annotated[AwareDatetime, Field(title="Updated At")]


class Comparison(RootModel[str]):
    root: Annotated[str, Field(max_length=4000, min_length=1, title="Comparison")]


class Critique(RootModel[str]):
    root: Annotated[str, Field(max_length=4000, min_length=1, title="Critique")]


class Revision(RootModel[str]):
    root: Annotated[str, Field(max_length=4000, min_length=1, title="Revision")]


class WordingIn(BaseModel):
    """
    A statement's principle texts as a person edited them; omitted ones are kept.
    """

    model_config = ConfigDict(
        extra="allow",
    )
    comparison: Annotated[Comparison | None, Field(title="Comparison")] = None
    critique: Annotated[Critique | None, Field(title="Critique")] = None
    revision: Annotated[Revision | None, Field(title="Revision")] = None


class WordingJobCreate(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    constitution: Annotated[str, Field(max_length=80, min_length=1, title="Constitution")]
    """
    A constitution version drafted from this public input (name@version): its statements are worded, and the job runs under it.
    """
    model: Annotated[
        str | None,
        Field(
            max_length=128,
            min_length=1,
            pattern="^(run:[0-9a-f]{32}|[A-Za-z0-9._/-]+)$",
            title="Model",
        ),
    ] = "smollm2"
    """
    The model that words the principles.
    """
    seed: Annotated[Seed5 | None, Field(title="Seed")] = None


class WorkerOnline(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    id: Annotated[str, Field(title="Id")]
    hostname: Annotated[str, Field(title="Hostname")]
    pid: Annotated[int, Field(title="Pid")]
    engine: Annotated[str, Field(title="Engine")]
    models: Annotated[list[str], Field(title="Models")]
    started_at: Annotated[AwareDatetime, Field(title="Started At")]
    last_seen: Annotated[AwareDatetime, Field(title="Last Seen")]
    items_done: Annotated[int, Field(title="Items Done")]
    current_chunk: Annotated[str | None, Field(title="Current Chunk")] = None
    """
    `job_id:chunk` it is running now; null when idle.
    """


class WorkerOut(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    id: Annotated[str, Field(title="Id")]
    hostname: Annotated[str, Field(title="Hostname")]
    pid: Annotated[int, Field(title="Pid")]
    engine: Annotated[str, Field(title="Engine")]
    models: Annotated[list[str], Field(title="Models")]
    started_at: Annotated[AwareDatetime, Field(title="Started At")]
    last_seen: Annotated[AwareDatetime, Field(title="Last Seen")]
    items_done: Annotated[int, Field(title="Items Done")]


class ServicesGatewayJobsSchemasItemOut(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    id: Annotated[int, Field(title="Id")]
    prompt_id: Annotated[int, Field(title="Prompt Id")]
    chunk: Annotated[int, Field(title="Chunk")]
    status: ItemState
    attempt: Annotated[int, Field(title="Attempt")]
    last_error: Annotated[str | None, Field(title="Last Error")]


class ServicesGatewayPaginationPageItemOut1(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    items: Annotated[list[ServicesGatewayJobsSchemasItemOut], Field(title="Items")]
    next_cursor: Annotated[str | None, Field(title="Next Cursor")] = None


class ServicesGatewayReviewsSchemasItemOut(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    position: Annotated[int, Field(title="Position")]
    label_id: Annotated[int, Field(title="Label Id")]
    stratum: Annotated[str | None, Field(title="Stratum")]
    kind: Annotated[str, Field(title="Kind")]
    """
    comparison (give a choice) or revision (give satisfies).
    """
    conversation: Annotated[list[dict[str, str]], Field(title="Conversation")]
    principle_ids: Annotated[list[str], Field(title="Principle Ids")]
    principles: Annotated[list[dict[str, Any]], Field(title="Principles")]
    """
    The principles' texts.
    """
    response_a: Annotated[str | None, Field(title="Response A")] = None
    response_b: Annotated[str | None, Field(title="Response B")] = None
    response: Annotated[str | None, Field(title="Response")] = None
    """
    Revision jobs: the first answer.
    """
    rounds: Annotated[list[dict[str, Any]] | None, Field(title="Rounds")] = None
    """
    Revision jobs: the critique -> revision chain.
    """
    completion: Annotated[str | None, Field(title="Completion")] = None
    """
    The final revision (or critique).
    """
    ai_label: Annotated[dict[str, Any], Field(title="Ai Label")]
    reviewed_by_me: Annotated[bool, Field(title="Reviewed By Me")]
    """
    The calling reviewer already gave a verdict.
    """
    my_verdict: VerdictOut | None = None
    verdicts: Annotated[int, Field(title="Verdicts")]
    """
    Verdicts on this label, by anyone.
    """


class Kind3(StrEnum):
    restricted = "restricted"
    allowed = "allowed"


class ClassifierCategory(BaseModel):
    """
    A category of content for constitutional classifiers (Sharma et al. 2025): what is
    restricted (a classifier flags it) or explicitly allowed (it must not be flagged).
    """

    model_config = ConfigDict(
        extra="allow",
    )
    id: Annotated[str, Field(pattern="^[a-z0-9][a-z0-9_-]{0,62}$", title="Id")]
    kind: Annotated[Kind3, Field(title="Kind")]
    description: Annotated[str, Field(max_length=4000, min_length=1, title="Description")]
    examples: Annotated[list[str] | None, Field(max_length=32, title="Examples")] = []


class ClassifierSection(BaseModel):
    """
    The categories input/output classifiers are trained on, and the score at which a
    deployed classifier blocks.
    """

    model_config = ConfigDict(
        extra="allow",
    )
    categories: Annotated[
        list[ClassifierCategory], Field(max_length=64, min_length=2, title="Categories")
    ]
    threshold: Annotated[float | None, Field(gt=0.0, lt=1.0, title="Threshold")] = 0.5


class Reasoning(RootModel[str]):
    root: Annotated[str, Field(max_length=8000, title="Reasoning")] = None


class ComparisonExample(BaseModel):
    """
    A worked comparison: the answer letter the feedback model should give.
    """

    model_config = ConfigDict(
        extra="allow",
    )
    prompt: Annotated[str, Field(max_length=8000, min_length=1, title="Prompt")]
    response_a: Annotated[str, Field(max_length=8000, min_length=1, title="Response A")]
    response_b: Annotated[str, Field(max_length=8000, min_length=1, title="Response B")]
    principle: Annotated[str, Field(max_length=4000, min_length=1, title="Principle")]
    answer: Annotated[str, Field(pattern="^[AB]$", title="Answer")]
    reasoning: Annotated[Reasoning | None, Field(title="Reasoning")] = None


class ComparisonPrinciple(BaseModel):
    """
    An RL-CAI principle: the question the feedback model answers with (A) or (B).
    """

    model_config = ConfigDict(
        extra="allow",
    )
    id: Annotated[str, Field(pattern="^[a-z0-9][a-z0-9_-]{0,62}$", title="Id")]
    text: Annotated[str, Field(max_length=4000, min_length=1, title="Text")]


class CritiqueExample(BaseModel):
    """
    A worked critique/revision round shown to the model before the real one.
    """

    model_config = ConfigDict(
        extra="allow",
    )
    prompt: Annotated[str, Field(max_length=8000, min_length=1, title="Prompt")]
    response: Annotated[str, Field(max_length=8000, min_length=1, title="Response")]
    critique_request: Annotated[str, Field(max_length=4000, min_length=1, title="Critique Request")]
    critique: Annotated[str, Field(max_length=8000, min_length=1, title="Critique")]
    revision_request: Annotated[str, Field(max_length=4000, min_length=1, title="Revision Request")]
    revision: Annotated[str, Field(max_length=8000, min_length=1, title="Revision")]


class CritiquePrinciple(BaseModel):
    """
    An SL-CAI principle: a critique request paired with its revision request.
    """

    model_config = ConfigDict(
        extra="allow",
    )
    id: Annotated[str, Field(pattern="^[a-z0-9][a-z0-9_-]{0,62}$", title="Id")]
    critique: Annotated[str, Field(max_length=4000, min_length=1, title="Critique")]
    revision: Annotated[str, Field(max_length=4000, min_length=1, title="Revision")]


class Constitution2(BaseModel):
    """
    A written constitution: the two principle sets of Bai et al. (2022), and optionally
    the categories of its classifiers.
    """

    model_config = ConfigDict(
        extra="allow",
    )
    name: Annotated[str, Field(pattern="^[a-z0-9][a-z0-9_-]{0,62}$", title="Name")]
    description: Annotated[str | None, Field(max_length=4000, title="Description")] = ""
    critique_principles: Annotated[
        list[CritiquePrinciple] | None,
        Field(max_length=256, title="Critique Principles", validate_default=True),
    ] = []
    comparison_principles: Annotated[
        list[ComparisonPrinciple] | None,
        Field(max_length=256, title="Comparison Principles", validate_default=True),
    ] = []
    critique_examples: Annotated[
        list[CritiqueExample] | None,
        Field(max_length=32, title="Critique Examples", validate_default=True),
    ] = []
    comparison_examples: Annotated[
        list[ComparisonExample] | None,
        Field(max_length=32, title="Comparison Examples", validate_default=True),
    ] = []
    classifier: ClassifierSection | None = None
    metadata: Annotated[dict[str, Any] | None, Field(title="Metadata")] = None


class AnalysisOut(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    public_input: Annotated[str, Field(title="Public Input")]
    parameters: Annotated[dict[str, Any], Field(title="Parameters")]
    k: Annotated[int, Field(title="K")]
    groups: Annotated[list[GroupOut], Field(title="Groups")]
    silhouettes: Annotated[dict[str, float], Field(title="Silhouettes")]
    explained_variance_ratio: Annotated[list[float], Field(title="Explained Variance Ratio")]
    grouped: Annotated[int, Field(title="Grouped")]
    excluded: Annotated[int, Field(title="Excluded")]
    statements: Annotated[list[StatementOut], Field(title="Statements")]
    """
    By consensus, highest first.
    """
    participants: Annotated[list[ParticipantOut] | None, Field(title="Participants")] = None
    """
    With participants=true: each one's group and position.
    """


class BatchCreate(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    name: Annotated[str | None, Field(max_length=128, title="Name")] = ""
    rows: Annotated[list[PromptRow], Field(max_length=10000, min_length=1, title="Rows")]


class CalibrationOut(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    low: Annotated[float, Field(title="Low")]
    high: Annotated[float, Field(title="High")]
    rate: RateOut


class Chain(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    label_id: Annotated[int, Field(title="Label Id")]
    prompt_id: Annotated[int, Field(title="Prompt Id")]
    conversation: Annotated[list[dict[str, Any]], Field(title="Conversation")]
    response: Annotated[str | None, Field(title="Response")]
    """
    The initial response the rounds start from.
    """
    rounds: Annotated[list[ChainRound], Field(title="Rounds")]
    """
    Critique -> revision, round 1 first.
    """
    completion: Annotated[str | None, Field(title="Completion")]
    """
    The final revision (the SFT target).
    """


class Claimed(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    id: Annotated[str, Field(title="Id")]
    type: Annotated[str, Field(title="Type")]
    status: RunStatus
    dataset: Annotated[str | None, Field(title="Dataset")]
    dataset_version_id: Annotated[str | None, Field(title="Dataset Version Id")]
    config: Annotated[dict[str, Any], Field(title="Config")]
    """
    The run's config, normalised (every field, defaults included), and what it trains on: base_model, reward_run, reference_model, dataset.
    """
    config_hash: Annotated[str | None, Field(title="Config Hash")] = None
    """
    config_hash() of the config, computed at submission.
    """
    trained_config_hash: Annotated[str | None, Field(title="Trained Config Hash")] = None
    """
    The hash the trainer reported training with (equal to config_hash).
    """
    artifact_uri: Annotated[str | None, Field(title="Artifact Uri")]
    checkpoint: Annotated[str | None, Field(title="Checkpoint")]
    error: Annotated[str | None, Field(title="Error")]
    lease_owner: Annotated[str | None, Field(title="Lease Owner")]
    created_at: Annotated[AwareDatetime, Field(title="Created At")]
    started_at: Annotated[AwareDatetime | None, Field(title="Started At")]
    finished_at: Annotated[AwareDatetime | None, Field(title="Finished At")]
    last_metrics: Annotated[dict[str, float] | None, Field(title="Last Metrics")] = None
    lease_token: Annotated[str, Field(title="Lease Token")]
    """
    The secret of this lease, shown only here: every heartbeat, metrics, checkpoint, complete and fail call of the lease presents it. A later claim of the run (after the lease expired) issues a new one, and this one stops working.
    """


class ConstitutionDiff(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    critique_principles: PrincipleSetDiff
    comparison_principles: PrincipleSetDiff
    description_changed: Annotated[bool, Field(title="Description Changed")]
    examples_changed: Annotated[bool, Field(title="Examples Changed")]
    classifier_changed: Annotated[bool | None, Field(title="Classifier Changed")] = False
    metadata_changed: Annotated[bool, Field(title="Metadata Changed")]


class CritiqueRenderRequest(BaseModel):
    """
    A preview: the critique and revision conversations of one SL-CAI round.
    """

    model_config = ConfigDict(
        extra="allow",
    )
    conversation: Annotated[
        list[PreviewMessage], Field(max_length=64, min_length=1, title="Conversation")
    ]
    response: Annotated[str, Field(max_length=65536, title="Response")]
    critique_request: Annotated[str, Field(max_length=4000, min_length=1, title="Critique Request")]
    revision_request: Annotated[str, Field(max_length=4000, min_length=1, title="Revision Request")]
    critique: Annotated[str | None, Field(max_length=65536, title="Critique")] = (
        "(the critique the model writes)"
    )


class DatasetCreate(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    name: Annotated[str, Field(pattern="^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$", title="Name")]
    kind: Annotated[Kind, Field(title="Kind")]
    filter: DatasetFilter | None = None
    mix: MixSpec | None = None


class DiffOut(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    name: Annotated[str, Field(title="Name")]
    from_version: Annotated[int, Field(title="From Version")]
    to_version: Annotated[int, Field(title="To Version")]
    diff: ConstitutionDiff


class DraftOut(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    constitution: Annotated[str, Field(title="Constitution")]
    """
    The version published, name@version.
    """
    created: Annotated[bool, Field(title="Created")]
    statements: Annotated[list[StatementOut], Field(title="Statements")]
    """
    The statements drafted from, in order.
    """


class DraftPreview(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    constitution: Annotated[dict[str, Any], Field(title="Constitution")]
    """
    The constitution document as it would be published; edit the wording with `wording`, or push an edited copy to POST /v1/constitutions.
    """
    statements: Annotated[list[StatementOut], Field(title="Statements")]


class DraftRequest(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    min_votes: Annotated[int | None, Field(ge=1, le=10000, title="Min Votes")] = 7
    """
    Votes a participant needs to be grouped.
    """
    max_groups: Annotated[int | None, Field(ge=1, le=10, title="Max Groups")] = 5
    """
    Most opinion groups tried.
    """
    seed: Annotated[int | None, Field(ge=0, le=2147483647, title="Seed")] = 0
    name: Annotated[str, Field(pattern="^[a-z0-9][a-z0-9_-]{0,62}$", title="Name")]
    """
    The constitution's name.
    """
    description: Annotated[str | None, Field(max_length=4000, title="Description")] = ""
    statements: Annotated[Statements | None, Field(title="Statements")] = None
    """
    Statement ids to draft from, in this order; default: the candidates.
    """
    min_group_agreement: Annotated[
        float | None, Field(ge=0.0, le=1.0, title="Min Group Agreement")
    ] = 0.6
    max_divisiveness: Annotated[float | None, Field(gt=0.0, le=1.0, title="Max Divisiveness")] = 0.5
    max_statements: Annotated[int | None, Field(ge=1, le=256, title="Max Statements")] = 64
    wording_job: Annotated[WordingJob | None, Field(title="Wording Job")] = None
    """
    A completed wording job of this input: its answers word the principles.
    """
    wording: Annotated[dict[str, WordingIn] | None, Field(title="Wording")] = None
    """
    Statement id -> edited texts; they win over the wording job's and the templates'.
    """


class ErrorBody(BaseModel):
    """
    Every error response of the API.
    """

    model_config = ConfigDict(
        extra="allow",
    )
    error: Annotated[str, Field(title="Error")]
    """
    A stable code: unauthorized, forbidden, not_found, conflict, too_large, invalid, validation_error, rate_limited or unavailable.
    """
    detail: Annotated[str, Field(title="Detail")]
    """
    What went wrong, for a person.
    """
    field: Annotated[str | None, Field(title="Field")] = None
    """
    The part of the request at fault, when one is.
    """
    errors: Annotated[list[FieldError] | None, Field(title="Errors")] = None
    """
    validation_error only: every failing location.
    """


class EvalJobOut(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    config: Annotated[str, Field(title="Config")]
    variant: Annotated[str, Field(title="Variant")]
    job_id: Annotated[str, Field(title="Job Id")]
    status: JobStatus
    counts: Annotated[dict[str, int], Field(title="Counts")]


class EvalOut(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    id: Annotated[str, Field(title="Id")]
    name: Annotated[str, Field(title="Name")]
    gold_set: Annotated[str, Field(title="Gold Set")]
    status: JobStatus
    configs: Annotated[list[dict[str, Any]], Field(title="Configs")]
    injection: Annotated[dict[str, Any] | None, Field(title="Injection")]
    seed: Annotated[int, Field(title="Seed")]
    jobs: Annotated[list[EvalJobOut], Field(title="Jobs")]
    items_total: Annotated[int, Field(title="Items Total")]
    items_finished: Annotated[int, Field(title="Items Finished")]
    created_at: Annotated[AwareDatetime, Field(title="Created At")]


class EvalReportOut(BaseModel):
    """
    Every number of an evaluation; docs/EVALUATION.md defines each one.
    """

    model_config = ConfigDict(
        extra="allow",
    )
    id: Annotated[str, Field(title="Id")]
    name: Annotated[str, Field(title="Name")]
    gold_set: Annotated[str, Field(title="Gold Set")]
    status: JobStatus
    complete: Annotated[bool, Field(title="Complete")]
    configs: Annotated[dict[str, dict[str, Any]], Field(title="Configs")]
    comparisons: Annotated[list[dict[str, Any]], Field(title="Comparisons")]
    injection: Annotated[dict[str, Any] | None, Field(title="Injection")]


class JobOut(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    id: Annotated[str, Field(title="Id")]
    type: Annotated[str, Field(title="Type")]
    status: JobStatus
    batch_id: Annotated[str, Field(title="Batch Id")]
    constitution: Annotated[str, Field(title="Constitution")]
    model: Annotated[str, Field(title="Model")]
    params: Annotated[dict[str, Any], Field(title="Params")]
    seed: Annotated[int, Field(title="Seed")]
    item_count: Annotated[int, Field(title="Item Count")]
    chunk_count: Annotated[int, Field(title="Chunk Count")]
    counts: Annotated[dict[str, int], Field(title="Counts")]
    created_at: Annotated[AwareDatetime, Field(title="Created At")]
    updated_at: Annotated[AwareDatetime, Field(title="Updated At")]
    finished_at: Annotated[AwareDatetime | None, Field(title="Finished At")]


class JobParams(BaseModel):
    """
    Knobs of a job; every one is recorded with the labels it produced.
    """

    model_config = ConfigDict(
        extra="allow",
    )
    rounds: Annotated[int | None, Field(ge=1, le=4, title="Rounds")] = 1
    """
    Critique/revision rounds (paper: up to 4).
    """
    chain_of_thought: Annotated[bool | None, Field(title="Chain Of Thought")] = False
    """
    Reason before the A/B answer.
    """
    swap: Annotated[bool | None, Field(title="Swap")] = True
    """
    Score both orders and average (position debiasing).
    """
    cot_band: Annotated[tuple[float, float] | None, Field(title="Cot Band")] = [
        0.4,
        0.6,
    ]
    """
    Chain-of-thought labels are clamped into this band.
    """
    min_choice_mass: Annotated[float | None, Field(ge=0.0, le=1.0, title="Min Choice Mass")] = 0.5
    """
    Abstain when P(A)+P(B) is below this.
    """
    few_shot: Annotated[bool | None, Field(title="Few Shot")] = True
    """
    Show the constitution's worked examples.
    """
    feedback_template: Annotated[str | None, Field(max_length=40, title="Feedback Template")] = (
        "charter-chat"
    )
    """
    How comparisons are put to the feedback model: a shipped template ('charter-chat': Charter's chat template: the conversation and the responses in tags, the principle between them, asked in a user turn.; 'principle-first': The chat template with the principle stated before the conversation, so the judge reads the responses knowing what to look for.; 'paper-plain': The format of Bai et al. (2022), section 4.1, as plain text with no chat template: a Human/Assistant transcript, the principle, the options, then 'The answer is: ('.), or one of the project's own (POST /v1/templates) as 'name' (its latest version, pinned at submission) or 'name@version'.
    """
    critique_template: Annotated[str | None, Field(max_length=40, title="Critique Template")] = (
        "charter-default"
    )
    """
    How SL-CAI asks for critiques and revisions: a shipped template ('charter-default': The principle's critique and revision requests as plain user turns.; 'paper-labelled': The requests labelled as in Bai et al. (2022), appendix: 'CritiqueRequest: ...' and 'RevisionRequest: ...'.; 'quoted-response': The critique request quotes the answer in tags, so a small model sees which text to critique; the revision request quotes the critique.), or one of the project's own (POST /v1/critique-templates) as 'name' or 'name@version' (pinned at submission).
    """
    principle: Annotated[Principle | None, Field(title="Principle")] = None
    """
    Comparison jobs: judge under this one comparison principle (its id) instead of one drawn at random per item.
    """
    neutralise: Annotated[bool | None, Field(title="Neutralise")] = True
    """
    Break control tokens and template delimiters in untrusted text. Only a judge evaluation turns it off, to measure what the defence is worth (POST /v1/evals).
    """
    system_prompt: Annotated[SystemPrompt | None, Field(title="System Prompt")] = "default"
    """
    Generate jobs: the policy's system prompt. 'default' is Charter's helpful, honest and harmless assistant; 'constitution' adds the constitution's description and comparison principles, as the guidance to follow (the baseline the paper left out: a model told its constitution, without training on it).
    """
    sampling: SamplingParams | None = None


class JobStage(BaseModel):
    """
    A labelling stage: the job's params, as ``POST /v1/jobs`` takes them.
    """

    model_config = ConfigDict(
        extra="allow",
    )
    params: JobParams | None = None


class JudgeConfig(BaseModel):
    """
    One judge: model, template, constitution (or one principle of it) and knobs.
    """

    model_config = ConfigDict(
        extra="allow",
    )
    name: Annotated[Name | None, Field(title="Name")] = None
    """
    How the report names it; 'config-<n>' (1-based) if omitted.
    """
    model: Annotated[
        str | None,
        Field(max_length=128, min_length=1, pattern="^[A-Za-z0-9._/-]+$", title="Model"),
    ] = "smollm2"
    constitution: Annotated[str, Field(max_length=80, min_length=1, title="Constitution")]
    """
    name or name@version; pinned at submission
    """
    feedback_template: Annotated[str | None, Field(max_length=40, title="Feedback Template")] = (
        "charter-chat"
    )
    principle: Annotated[Principle1 | None, Field(title="Principle")] = None
    """
    Judge under this one comparison principle instead of a random draw.
    """
    few_shot: Annotated[bool | None, Field(title="Few Shot")] = True
    chain_of_thought: Annotated[bool | None, Field(title="Chain Of Thought")] = False
    cot_band: Annotated[tuple[float, float] | None, Field(title="Cot Band")] = [
        0.4,
        0.6,
    ]
    swap: Annotated[bool | None, Field(title="Swap")] = True
    min_choice_mass: Annotated[float | None, Field(ge=0.0, le=1.0, title="Min Choice Mass")] = 0.5
    sampling: SamplingParams | None = None


class JudgeReportOut(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    config: Annotated[dict[str, Any], Field(title="Config")]
    job_id: Annotated[str | None, Field(title="Job Id")]
    counts: Annotated[dict[str, int], Field(title="Counts")]
    scored: Annotated[int, Field(title="Scored")]
    abstained: Annotated[int, Field(title="Abstained")]
    ratings: Annotated[list[RatingOut], Field(title="Ratings")]
    head_to_head: Annotated[list[HeadToHeadOut], Field(title="Head To Head")]
    rating_error: Annotated[str | None, Field(title="Rating Error")]


class JudgeSpec(BaseModel):
    """
    A judge configuration with a required name: the axis it scores (e.g.
    'harmlessness' under the default constitution, 'helpfulness' under helpful-balance).
    """

    model_config = ConfigDict(
        extra="allow",
    )
    name: Annotated[str, Field(pattern="[A-Za-z0-9][A-Za-z0-9._-]{0,39}", title="Name")]
    """
    The axis the judge scores.
    """
    model: Annotated[
        str | None,
        Field(max_length=128, min_length=1, pattern="^[A-Za-z0-9._/-]+$", title="Model"),
    ] = "smollm2"
    constitution: Annotated[str, Field(max_length=80, min_length=1, title="Constitution")]
    """
    name or name@version; pinned at submission
    """
    feedback_template: Annotated[str | None, Field(max_length=40, title="Feedback Template")] = (
        "charter-chat"
    )
    principle: Annotated[Principle1 | None, Field(title="Principle")] = None
    """
    Judge under this one comparison principle instead of a random draw.
    """
    few_shot: Annotated[bool | None, Field(title="Few Shot")] = True
    chain_of_thought: Annotated[bool | None, Field(title="Chain Of Thought")] = False
    cot_band: Annotated[tuple[float, float] | None, Field(title="Cot Band")] = [
        0.4,
        0.6,
    ]
    swap: Annotated[bool | None, Field(title="Swap")] = True
    min_choice_mass: Annotated[float | None, Field(ge=0.0, le=1.0, title="Min Choice Mass")] = 0.5
    sampling: SamplingParams | None = None


class JudgeSummaryOut(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    n: Annotated[int, Field(title="N")]
    """
    Labels summarised (with a final p_a).
    """
    mean_p_a: Annotated[float | None, Field(title="Mean P A")]
    position_bias: EstimateOut
    """
    Mean P(response shown first wins) over both orders; 0.5 is unbiased.
    """
    length_bias: LengthBiasOut
    swap_disagreement: EstimateOut
    """
    Share of swapped pairs whose orders picked different winners.
    """
    histogram: Annotated[list[BinOut], Field(title="Histogram")]
    """
    Soft labels p_a in ten bins over [0, 1].
    """


class ModelStats(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    model: Annotated[str, Field(title="Model")]
    template_version: Annotated[str, Field(title="Template Version")]
    """
    The judge prompt template's version.
    """
    jobs: Annotated[int, Field(title="Jobs")]
    """
    compare/rl_cai jobs with labels from this model.
    """
    labels: Annotated[int, Field(title="Labels")]
    """
    Their labels.
    """
    sampled: Annotated[bool, Field(title="Sampled")]
    """
    True when the summary read only the most recent labels.
    """
    judge: JudgeSummaryOut


class PageEvalOut(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    items: Annotated[list[EvalOut], Field(title="Items")]
    next_cursor: Annotated[str | None, Field(title="Next Cursor")] = None


class PageJobOut(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    items: Annotated[list[JobOut], Field(title="Items")]
    next_cursor: Annotated[str | None, Field(title="Next Cursor")] = None


class PagePolicyEvalOut(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    items: Annotated[list[PolicyEvalOut], Field(title="Items")]
    next_cursor: Annotated[str | None, Field(title="Next Cursor")] = None


class PagePromptOut(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    items: Annotated[list[PromptOut], Field(title="Items")]
    next_cursor: Annotated[str | None, Field(title="Next Cursor")] = None


class PolicyEvalReportOut(BaseModel):
    """
    Every number of a policy evaluation; docs/EVALUATION.md defines each one.
    """

    model_config = ConfigDict(
        extra="allow",
    )
    id: Annotated[str, Field(title="Id")]
    name: Annotated[str, Field(title="Name")]
    stage: Annotated[Stage, Field(title="Stage")]
    status: Annotated[Status, Field(title="Status")]
    complete: Annotated[bool, Field(title="Complete")]
    anchor: Annotated[str, Field(title="Anchor")]
    level: Annotated[float, Field(title="Level")]
    bootstrap: Annotated[int, Field(title="Bootstrap")]
    generations: Annotated[dict[str, dict[str, int]], Field(title="Generations")]
    judges: Annotated[dict[str, JudgeReportOut], Field(title="Judges")]
    plot: Annotated[list[str] | None, Field(title="Plot")]


class PolicySpec(BaseModel):
    """
    One policy: what answers the prompts.
    """

    model_config = ConfigDict(
        extra="allow",
    )
    name: Annotated[str, Field(pattern="[A-Za-z0-9][A-Za-z0-9._-]{0,39}", title="Name")]
    """
    How the report names it.
    """
    model: Annotated[
        str,
        Field(
            max_length=128,
            min_length=1,
            pattern="^(run:[0-9a-f]{32}|[A-Za-z0-9._/-]+)$",
            title="Model",
        ),
    ]
    """
    A model some worker serves, or run:<id> (a completed policy run).
    """
    system_prompt: Annotated[SystemPrompt1 | None, Field(title="System Prompt")] = "default"
    """
    'constitution': the model is told its constitution (the paper's missing baseline: the base model, prompted with the constitution).
    """
    constitution: Annotated[Constitution1 | None, Field(title="Constitution")] = None
    """
    The constitution its generate job names (and tells it, with system_prompt 'constitution'); the first judge's if omitted.
    """
    sampling: SamplingParams | None = None


class RunCreate(
    RootModel[
        SFTRunCreate
        | PMRunCreate
        | DPORunCreate
        | PPORunCreate
        | RLOORunCreate
        | GRPORunCreate
        | ClassifierRunCreate
    ]
):
    root: Annotated[
        SFTRunCreate
        | PMRunCreate
        | DPORunCreate
        | PPORunCreate
        | RLOORunCreate
        | GRPORunCreate
        | ClassifierRunCreate,
        Field(discriminator="type", title="RunCreate"),
    ]
    """
    A training run to queue: the body of its ``type`` (sft, pm, dpo, ppo, rloo, grpo or
    classifier).
    """


class RunOut(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    id: Annotated[str, Field(title="Id")]
    type: Annotated[str, Field(title="Type")]
    status: RunStatus
    dataset: Annotated[str | None, Field(title="Dataset")]
    dataset_version_id: Annotated[str | None, Field(title="Dataset Version Id")]
    config: Annotated[dict[str, Any], Field(title="Config")]
    """
    The run's config, normalised (every field, defaults included), and what it trains on: base_model, reward_run, reference_model, dataset.
    """
    config_hash: Annotated[str | None, Field(title="Config Hash")] = None
    """
    config_hash() of the config, computed at submission.
    """
    trained_config_hash: Annotated[str | None, Field(title="Trained Config Hash")] = None
    """
    The hash the trainer reported training with (equal to config_hash).
    """
    artifact_uri: Annotated[str | None, Field(title="Artifact Uri")]
    checkpoint: Annotated[str | None, Field(title="Checkpoint")]
    error: Annotated[str | None, Field(title="Error")]
    lease_owner: Annotated[str | None, Field(title="Lease Owner")]
    created_at: Annotated[AwareDatetime, Field(title="Created At")]
    started_at: Annotated[AwareDatetime | None, Field(title="Started At")]
    finished_at: Annotated[AwareDatetime | None, Field(title="Finished At")]
    last_metrics: Annotated[dict[str, float] | None, Field(title="Last Metrics")] = None


class RunStageSFTConfig(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    config: SFTConfig


class StageOut(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    name: Annotated[str, Field(title="Name")]
    kind: Annotated[Kind2, Field(title="Kind")]
    needs: Annotated[list[str], Field(title="Needs")]
    status: Annotated[Literal["pending"] | StageStatus, Field(title="Status")]
    attempt: Annotated[int, Field(title="Attempt")]
    output: Annotated[str | None, Field(title="Output")]
    error: Annotated[str | None, Field(title="Error")]
    inputs: Annotated[dict[str, Any] | None, Field(title="Inputs")]
    job_id: Annotated[str | None, Field(title="Job Id")]
    dataset_version_id: Annotated[str | None, Field(title="Dataset Version Id")]
    run_id: Annotated[str | None, Field(title="Run Id")]
    policy_eval_id: Annotated[str | None, Field(title="Policy Eval Id")]
    created_at: Annotated[AwareDatetime | None, Field(title="Created At")]
    finished_at: Annotated[AwareDatetime | None, Field(title="Finished At")]


class Stuck(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    expired_leases: Annotated[int, Field(title="Expired Leases")]
    """
    Running items whose lease expired and that the sweeper has not re-queued.
    """
    unserved_jobs: Annotated[list[UnservedJob], Field(title="Unserved Jobs")]
    """
    Active jobs whose model no live worker serves.
    """


class ServicesGatewayPaginationPageItemOut2(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    items: Annotated[list[ServicesGatewayReviewsSchemasItemOut], Field(title="Items")]
    next_cursor: Annotated[str | None, Field(title="Next Cursor")] = None


class AgreementOut(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    job_id: Annotated[str | None, Field(title="Job Id")]
    model: Annotated[str | None, Field(title="Model")]
    labels: Annotated[int, Field(title="Labels")]
    """
    Reviewed labels.
    """
    reviewers: Annotated[int, Field(title="Reviewers")]
    verdicts: Annotated[int, Field(title="Verdicts")]
    overall: RateOut
    by_principle: Annotated[dict[str, RateOut], Field(title="By Principle")]
    by_model: Annotated[dict[str, RateOut], Field(title="By Model")]
    calibration: Annotated[list[CalibrationOut], Field(title="Calibration")]
    """
    Comparisons: agreement by AI confidence max(P(A), 1-P(A)).
    """
    kappa: KappaOut


class Judges(RootModel[list[JudgeSpec]]):
    root: Annotated[list[JudgeSpec], Field(max_length=4, min_length=1, title="Judges")]
    """
    As POST /v1/policy-evals takes them; by default one 'harmlessness' judge: the base model under the pipeline's constitution.
    """


class EloStage(BaseModel):
    """
    The closing Elo evaluation of the base, SFT and RL policies.
    """

    model_config = ConfigDict(
        extra="allow",
    )
    judges: Annotated[Judges | None, Field(title="Judges")] = None
    """
    As POST /v1/policy-evals takes them; by default one 'harmlessness' judge: the base model under the pipeline's constitution.
    """
    baseline: Annotated[bool | None, Field(title="Baseline")] = True
    """
    Also rate the base model told the constitution as its system prompt (the baseline the paper left out).
    """
    sampling: SamplingParams | None = None
    """
    How every policy samples its answers.
    """
    bootstrap: Annotated[int | None, Field(ge=100, le=10000, title="Bootstrap")] = 1000
    plot: Annotated[Plot | None, Field(title="Plot")] = None


class EvalCreate(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    gold_set: Annotated[str, Field(max_length=80, min_length=1, title="Gold Set")]
    """
    name or name@version; pinned at submission
    """
    name: Annotated[str | None, Field(max_length=128, title="Name")] = ""
    configs: Annotated[list[JudgeConfig], Field(max_length=8, min_length=1, title="Configs")]
    injection: InjectionSpec | None = None
    """
    Also score adversarial variants of the gold set.
    """
    seed: Annotated[Seed | None, Field(title="Seed")] = None
    """
    Random if omitted.
    """
    chunk_size: Annotated[ChunkSize | None, Field(title="Chunk Size")] = None
    """
    Items per task.
    """


class JobCreate(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    type: JobType
    batch_id: Annotated[str, Field(max_length=32, min_length=1, title="Batch Id")]
    constitution: Annotated[str, Field(max_length=80, min_length=1, title="Constitution")]
    """
    name or name@version; pinned at submission
    """
    model: Annotated[
        str,
        Field(
            max_length=128,
            min_length=1,
            pattern="^(run:[0-9a-f]{32}|[A-Za-z0-9._/-]+)$",
            title="Model",
        ),
    ]
    """
    A model some worker serves, or run:<id>: the model a completed training run of the project made, served by a worker that lists it.
    """
    params: JobParams | None = None
    seed: Annotated[Seed | None, Field(title="Seed")] = None
    """
    Random if omitted.
    """
    chunk_size: Annotated[ChunkSize | None, Field(title="Chunk Size")] = None
    """
    Items per task.
    """


class JobStats(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    job_id: Annotated[str, Field(title="Job Id")]
    type: JobType
    model: Annotated[str, Field(title="Model")]
    status: JobStatus
    item_count: Annotated[int, Field(title="Item Count")]
    counts: Annotated[dict[str, int], Field(title="Counts")]
    """
    Items by state (every state present).
    """
    bucket_seconds: Annotated[int, Field(title="Bucket Seconds")]
    """
    Width of one timeline bucket.
    """
    timeline: Annotated[list[MinuteCount], Field(title="Timeline")]
    """
    Cumulative finished (done, abstained, failed) items at the end of each bucket since the job was created (the bucket in progress: at this moment).
    """
    items_per_minute: Annotated[float | None, Field(title="Items Per Minute")]
    """
    Over the last 15 minutes of timeline.
    """
    eta_seconds: Annotated[float | None, Field(title="Eta Seconds")]
    """
    Active items / throughput; 0 when none left.
    """
    failures: Annotated[list[ReasonCount], Field(title="Failures")]
    abstentions: Annotated[list[ReasonCount], Field(title="Abstentions")]
    labels: Annotated[int, Field(title="Labels")]
    """
    Labels the job has written.
    """
    sampled: Annotated[bool, Field(title="Sampled")]
    """
    True when the statistics below read only the most recent labels.
    """
    judge: JudgeSummaryOut | None
    """
    compare/rl_cai jobs only.
    """
    by_principle: Annotated[dict[str, JudgeSummaryOut], Field(title="By Principle")]
    """
    compare/rl_cai jobs only.
    """
    principle_draws: Annotated[dict[str, int] | None, Field(title="Principle Draws")]
    """
    sl_cai, critique and revise jobs: critique principles drawn, per round.
    """
    chains: Annotated[list[Chain], Field(title="Chains")]
    """
    A sample of critique -> revision chains.
    """


class Overview(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    now: Annotated[AwareDatetime, Field(title="Now")]
    hours: Annotated[int, Field(title="Hours")]
    queue: Annotated[list[QueueDepth], Field(title="Queue")]
    """
    Items by model and state, active jobs only.
    """
    workers: Annotated[list[WorkerOnline], Field(title="Workers")]
    """
    Live workers (heartbeat within the stale window) serving a model this project's jobs use; items_done counts this project's labels.
    """
    live_seconds: Annotated[float, Field(title="Live Seconds")]
    """
    A worker is live if seen this recently.
    """
    labels_per_minute: Annotated[list[MinuteCount], Field(title="Labels Per Minute")]
    """
    Labels written per minute over the window, every minute present.
    """
    finished_items: Annotated[int, Field(title="Finished Items")]
    """
    Items that became done/abstained/failed in the window.
    """
    failure_rate: EstimateOut
    """
    failed / finished_items (Wilson).
    """
    abstention_rate: EstimateOut
    """
    abstained / finished_items (Wilson).
    """
    outbox_backlog: Annotated[int, Field(title="Outbox Backlog")]
    """
    Chunks with queued items never published.
    """
    stuck: Stuck


class PageRunOut(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    items: Annotated[list[RunOut], Field(title="Items")]
    next_cursor: Annotated[str | None, Field(title="Next Cursor")] = None


class PipelineCreate(BaseModel):
    """
    The whole recipe: SL-CAI -> SFT -> RL-CAI -> PM -> RL -> Elo (docs/PIPELINES.md).
    """

    model_config = ConfigDict(
        extra="allow",
    )
    name: Annotated[str | None, Field(max_length=128, title="Name")] = ""
    base_model: Annotated[
        str,
        Field(
            max_length=128,
            min_length=1,
            pattern="^(run:[0-9a-f]{32}|[A-Za-z0-9._/-]+)$",
            title="Base Model",
        ),
    ]
    """
    The model SL-CAI critiques and revises with, the SFT and PM runs start from, and the Elo evaluation's anchor.
    """
    constitution: Annotated[str, Field(max_length=80, min_length=1, title="Constitution")]
    """
    name or name@version; pinned at submission, for every stage.
    """
    prompts: Annotated[str, Field(max_length=32, min_length=1, title="Prompts")]
    """
    Red-team prompts: the SL-CAI batch.
    """
    rl_prompts: Annotated[RlPrompts | None, Field(title="Rl Prompts")] = None
    """
    The RL-CAI batch (the SFT model answers each twice and compares); default: prompts.
    """
    eval_prompts: Annotated[EvalPrompts | None, Field(title="Eval Prompts")] = None
    """
    The Elo evaluation's batch (held-out prompts); default: rl_prompts.
    """
    seed: Annotated[Seed | None, Field(title="Seed")] = None
    """
    Random if omitted.
    """
    chunk_size: Annotated[ChunkSize | None, Field(title="Chunk Size")] = None
    """
    Items per task.
    """
    sl_cai: JobStage | None = None
    sft_data: SFTDataStage | None = None
    sft: RunStageSFTConfig | None = None
    rl_cai: JobStage | None = None
    pref_data: PreferenceDataStage | None = None
    pm: RunStagePMConfig | None = None
    ppo: RunStagePPOConfig | None = None
    """
    Policy training stages: any of ppo, dpo, rloo, grpo; ppo if none.
    """
    dpo: RunStageDPOConfig | None = None
    rloo: RunStageRLOOConfig | None = None
    grpo: RunStageGRPOConfig | None = None
    elo: EloStage | None = None


class PipelineOut(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    id: Annotated[str, Field(title="Id")]
    name: Annotated[str, Field(title="Name")]
    state: PipelineState
    error: Annotated[str | None, Field(title="Error")]
    spec: Annotated[dict[str, Any], Field(title="Spec")]
    stages: Annotated[list[StageOut], Field(title="Stages")]
    created_at: Annotated[AwareDatetime, Field(title="Created At")]
    advanced_at: Annotated[AwareDatetime | None, Field(title="Advanced At")]


class PolicyEvalCreate(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    name: Annotated[str | None, Field(max_length=128, title="Name")] = ""
    batch_id: Annotated[str, Field(max_length=32, min_length=1, title="Batch Id")]
    """
    The prompts every policy answers.
    """
    policies: Annotated[list[PolicySpec], Field(max_length=8, min_length=2, title="Policies")]
    judges: Annotated[list[JudgeSpec], Field(max_length=4, min_length=1, title="Judges")]
    """
    Each scores every pair of answers as one compare job: e.g. 'harmlessness' under the default constitution and 'helpfulness' under helpful-balance, as the paper does.
    """
    anchor: Annotated[str | None, Field(title="Anchor")] = None
    """
    The policy at Elo 0 (the base model); the first if omitted.
    """
    plot: Annotated[Plot1 | None, Field(title="Plot")] = None
    """
    The judges on the plot's x and y axes; by default helpfulness against harmlessness when both are judged, else the first two.
    """
    bootstrap: Annotated[int | None, Field(ge=100, le=10000, title="Bootstrap")] = 1000
    """
    Bootstrap samples (over prompts).
    """
    seed: Annotated[Seed | None, Field(title="Seed")] = None
    """
    Random if omitted.
    """
    chunk_size: Annotated[ChunkSize | None, Field(title="Chunk Size")] = None
    """
    Items per task.
    """


class PagePipelineOut(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    items: Annotated[list[PipelineOut], Field(title="Items")]
    next_cursor: Annotated[str | None, Field(title="Next Cursor")] = None
