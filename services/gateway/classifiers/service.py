"""Synthetic classifier data: two ``generate`` jobs and the dataset frozen from them.

The plan of each job is a pure function of the constitution's ``classifier`` section,
the seed and (for the responses) what the requests job wrote
(:mod:`charter.core.classifier_data`), so nothing but the jobs is stored: a job's
batch name says what it is (``classifier-requests:<constitution ref>``,
``classifier-responses:<requests job id>``) and its answers are read back by position.
"""

from __future__ import annotations

import secrets
from typing import Any

from sqlalchemy.orm import Session

from charter.core import classifier_data
from charter.core.constitution import ClassifierSection, Constitution
from charter.core.engine import SamplingParams
from charter.core.jobs import JobParams, JobType
from charter.db.models import (
    ConstitutionVersion,
    Dataset,
    DatasetVersion,
    Job,
    PromptBatch,
)
from charter.errors import Conflict, Invalid
from charter.settings import Settings
from services.gateway.batches import service as batches
from services.gateway.classifiers.schemas import (
    ClassifierDatasetCreate,
    RequestsJobCreate,
    ResponsesJobCreate,
)
from services.gateway.constitutions import service as constitutions
from services.gateway.datasets import service as datasets
from services.gateway.jobs import service as jobs
from services.gateway.jobs.schemas import JobCreate

REQUESTS_BATCH = "classifier-requests:"
RESPONSES_BATCH = "classifier-responses:"


def section_of(version: ConstitutionVersion, ref: str, field: str) -> ClassifierSection:
    section = Constitution.model_validate(version.content).classifier
    if section is None:
        raise Invalid(
            f"constitution {ref} has no classifier section (categories to write data for)",
            field=field,
        )
    return section


def _generate(
    session: Session,
    project_id: str,
    settings: Settings,
    *,
    batch_name: str,
    prompts: list[str],
    ref: str,
    model: str,
    seed: int,
    sampling: SamplingParams,
) -> Job:
    batch = batches.create(
        session, project_id, batch_name, ((p, None, None, None, None) for p in prompts)
    )
    spec = JobCreate(
        type=JobType.GENERATE, batch_id=batch.id, constitution=ref, model=model, seed=seed,
        params=JobParams(sampling=sampling),
    )  # fmt: skip
    return jobs.submit(session, project_id, spec, settings)


def submit_requests_job(
    session: Session, project_id: str, body: RequestsJobCreate, settings: Settings
) -> Job:
    """A ``generate`` job writing ``per_category`` user requests for every category."""
    version = constitutions.resolve(session, project_id, body.constitution)
    ref = f"{constitutions.name_of(session, version)}@{version.version}"
    section = section_of(version, ref, "constitution")
    seed = body.seed if body.seed is not None else secrets.randbelow(2**62)
    slots = classifier_data.request_slots(section, body.per_category, seed)
    return _generate(
        session, project_id, settings,
        batch_name=f"{REQUESTS_BATCH}{ref}",
        prompts=[classifier_data.request_prompt(section, s) for s in slots],
        ref=ref, model=body.model, seed=seed,
        sampling=SamplingParams(max_tokens=body.max_tokens, temperature=body.temperature),
    )  # fmt: skip


class _Requests:
    """A finished requests job: its plan and what it wrote (cleaned), by position."""

    def __init__(self, session: Session, project_id: str, job_id: str, field: str) -> None:
        job = _finished(session, project_id, job_id, REQUESTS_BATCH, "requests", field)
        version = session.get_one(ConstitutionVersion, job.constitution_version_id)
        self.job = job
        self.section = section_of(version, job.constitution_ref, field)
        batch = session.get_one(PromptBatch, job.batch_id)
        per_category = batch.row_count // len(self.section.categories)
        self.slots = classifier_data.request_slots(self.section, per_category, job.seed)
        self.labels = jobs.completions(session, job.id)
        self.texts = {i: classifier_data.clean(text) for i, (_, text) in self.labels.items()}


def _finished(
    session: Session, project_id: str, job_id: str, prefix: str, what: str, field: str
) -> Job:
    job = jobs.get(session, project_id, job_id, field=field)
    batch = session.get_one(PromptBatch, job.batch_id)
    if job.type != JobType.GENERATE or not batch.name.startswith(prefix):
        raise Invalid(f"job {job_id!r} is no classifier {what} job", field=field)
    if job.finished_at is None:
        raise Conflict(f"{what} job {job_id!r} has not finished yet", field=field)
    return job


def submit_responses_job(
    session: Session, project_id: str, body: ResponsesJobCreate, settings: Settings
) -> Job:
    """A ``generate`` job paraphrasing, answering and (restricted) refusing each request."""
    requests = _Requests(session, project_id, body.requests_job, "requests_job")
    slots = classifier_data.response_slots(requests.section, requests.slots, requests.texts)
    if not slots:
        raise Invalid(
            f"requests job {body.requests_job!r} wrote no usable request", field="requests_job"
        )
    job = requests.job
    seed = body.seed if body.seed is not None else secrets.randbelow(2**62)
    return _generate(
        session, project_id, settings,
        batch_name=f"{RESPONSES_BATCH}{job.id}",
        prompts=[
            classifier_data.response_prompt(s, requests.texts[s.request] or "") for s in slots
        ],
        ref=job.constitution_ref, model=body.model or job.model, seed=seed,
        sampling=SamplingParams(max_tokens=body.max_tokens),
    )  # fmt: skip


def freeze(
    session: Session, project_id: str, body: ClassifierDatasetCreate
) -> tuple[Dataset, DatasetVersion]:
    """A ``classifier`` dataset version of every row the two jobs make, each with the
    labels it came from."""
    responses_job = _finished(
        session, project_id, body.responses_job, RESPONSES_BATCH, "responses", "responses_job"
    )
    batch = session.get_one(PromptBatch, responses_job.batch_id)
    requests = _Requests(
        session, project_id, batch.name.removeprefix(RESPONSES_BATCH), "responses_job"
    )
    slots = classifier_data.response_slots(requests.section, requests.slots, requests.texts)
    answered = jobs.completions(session, responses_job.id)
    made = classifier_data.rows(
        requests.section,
        requests.slots,
        requests.texts,
        slots,
        {j: classifier_data.clean(text) for j, (_, text) in answered.items()},
        seed=requests.job.seed,
    )
    if not made:
        raise Invalid(
            f"jobs {requests.job.id!r} and {responses_job.id!r} made no row (no request was "
            "answered)",
            field="responses_job",
        )
    out = [_with_provenance(row, requests, answered, responses_job) for row in made]
    source = {
        "classifier_data": {
            "constitution": requests.job.constitution_ref,
            "requests_job": requests.job.id,
            "responses_job": responses_job.id,
        }
    }
    return datasets.upload(session, project_id, body.name, "classifier", out, source=source)


def _with_provenance(
    row: dict[str, Any],
    requests: _Requests,
    answered: dict[int, tuple[int, str | None]],
    responses_job: Job,
) -> dict[str, Any]:
    positions = row.pop("positions")
    paraphrase = positions["paraphrase"]
    return row | {
        "request_label_id": requests.labels[positions["request"]][0],
        "paraphrase_label_id": None if paraphrase is None else answered[paraphrase][0],
        "response_label_id": answered[positions["response"]][0],
        "constitution_ref": requests.job.constitution_ref,
        "model": responses_job.model,
    }
