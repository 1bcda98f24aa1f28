"""``/v1/classifier-data``: synthetic data for constitutional classifiers, written by a
model as two ``generate`` jobs and frozen into a ``classifier`` dataset version."""

from __future__ import annotations

from fastapi import APIRouter, Request, status

from services.gateway.classifiers import service
from services.gateway.classifiers.schemas import (
    ClassifierDatasetCreate,
    RequestsJobCreate,
    ResponsesJobCreate,
)
from services.gateway.datasets.endpoints import out as dataset_out
from services.gateway.datasets.schemas import DatasetVersionOut
from services.gateway.deps import SessionDep, SettingsDep, SubmitKey
from services.gateway.jobs.endpoints import queued
from services.gateway.jobs.schemas import JobOut
from services.gateway.unit_of_work import UnitOfWorkRoute

router = APIRouter(prefix="/v1/classifier-data", tags=["classifiers"], route_class=UnitOfWorkRoute)


@router.post(
    "/requests",
    response_model=JobOut,
    status_code=status.HTTP_202_ACCEPTED,
    summary="Have a model write user requests for every classifier category (a generate job)",
    description="`per_category` prompts for each category of the constitution's `classifier` "
    "section, each showing one of its examples (drawn by the seed). Once it has finished, "
    "pass its id to `POST /v1/classifier-data/responses`.",
)
def create_requests_job(
    body: RequestsJobCreate,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    key: SubmitKey,
) -> JobOut:
    return queued(request, service.submit_requests_job(session, key.project_id, body, settings))


@router.post(
    "/responses",
    response_model=JobOut,
    status_code=status.HTTP_202_ACCEPTED,
    summary="Have a model paraphrase, answer and refuse the requests written (a generate job)",
    description="For each request the requests job wrote: a paraphrase, an answer and, for a "
    "restricted category, a refusal. Once it has finished, freeze the rows with "
    "`POST /v1/classifier-data/datasets`.",
)
def create_responses_job(
    body: ResponsesJobCreate,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    key: SubmitKey,
) -> JobOut:
    return queued(request, service.submit_responses_job(session, key.project_id, body, settings))


@router.post(
    "/datasets",
    response_model=DatasetVersionOut,
    status_code=status.HTTP_201_CREATED,
    summary="Freeze the two jobs' rows as a classifier dataset version",
    description="Each request in three variants (direct, the model's paraphrase, and a "
    "character-level obfuscation) with each of its responses; `restricted` flags the request "
    "(its category is restricted), `harmful` the response (it answers a restricted request). "
    "Every row names the labels it came from.",
)
def create_dataset(
    body: ClassifierDatasetCreate, session: SessionDep, key: SubmitKey
) -> DatasetVersionOut:
    return dataset_out(*service.freeze(session, key.project_id, body))
