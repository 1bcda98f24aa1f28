"""``/dashboard``: the operator pages. Each reads only the session's project.

Pages are rendered on the server (Jinja2, charts as inline SVG); ``?fragment=1``
renders only a page's live block, which ``static/dashboard.js`` polls and swaps in.
The numbers come from the stats service and the domain services, never computed here.
"""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import parse_qs

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers, QueryParams

from charter.core import eval_plans
from charter.core.jobs import FINAL_JOB_STATUSES, ItemState, JobStatus, JobType, job_status
from charter.db.models import Job
from charter.errors import CharterError, Invalid
from services.gateway import pagination
from services.gateway.auth import authenticate
from services.gateway.constitutions import service as constitutions
from services.gateway.dashboard import charts, rendering, service, views
from services.gateway.dashboard.auth import (
    COOKIE,
    DashboardRoute,
    check_csrf,
    clear_cookie,
    public,
    set_cookie,
)
from services.gateway.datasets import endpoints as dataset_api
from services.gateway.datasets import service as datasets
from services.gateway.deps import CurrentKey, SessionDep, SettingsDep, check_scope
from services.gateway.evals import endpoints as eval_api
from services.gateway.evals import report as eval_report
from services.gateway.evals import service as evals
from services.gateway.jobs import service as jobs
from services.gateway.policy_evals import endpoints as policy_eval_api
from services.gateway.policy_evals import report as policy_eval_report
from services.gateway.policy_evals import service as policy_evals
from services.gateway.public_inputs import endpoints as public_input_api
from services.gateway.public_inputs import service as public_inputs
from services.gateway.public_inputs.schemas import AnalysisQuery
from services.gateway.reviews import service as reviews
from services.gateway.reviews.schemas import VerdictCreate
from services.gateway.runs import service as runs
from services.gateway.stats import service as stats

router = APIRouter(prefix=rendering.PREFIX, route_class=DashboardRoute, include_in_schema=False)
page = rendering.page
MAX_FORM_BYTES = 4096
METRIC_POINTS = 5000  # the last this many reports of a run are charted
PageSize = Annotated[int, Query(ge=1, le=200)]


def _form(body: bytes) -> dict[str, str]:
    if len(body) > MAX_FORM_BYTES:
        raise Invalid(f"the form is larger than {MAX_FORM_BYTES} bytes", field="body")
    try:
        fields = parse_qs(body.decode(), max_num_fields=8, strict_parsing=False)
    except (UnicodeDecodeError, ValueError) as exc:
        raise Invalid("the form could not be read", field="body") from exc
    return {name: values[0] for name, values in fields.items()}


def _next(target: str | None) -> str:
    """Where to go after logging in: only a dashboard path of this gateway."""
    if (
        target
        and target.startswith(f"{rendering.PREFIX}/")
        and not any(bad in target for bad in ("\\", "://", "//"))
    ):
        return target
    return f"{rendering.PREFIX}/"


# --------------------------------------------------------------------------- login


@router.get("/login")
@public
async def login_form(request: Request, next: str | None = None) -> HTMLResponse:
    return page(request, "login.html", next=_next(next), error=None)


@router.post("/login")
@public
async def login(request: Request, session: SessionDep, settings: SettingsDep) -> Response:
    form = _form(await request.body())
    target = _next(form.get("next"))
    limiter = request.app.state.rate_limiter

    def admit() -> service.Login:
        # Checked exactly as the API checks a key: unknown, revoked and expired keys are
        # refused, failures count against the address, the read limit applies.
        key = authenticate(
            session,
            Headers({"x-api-key": form.get("api_key", "").strip()}),
            QueryParams(""),
            settings.secret_key,
            limiter=limiter,
            client=request.client,
        )
        limiter.hit(key.id, "read")
        check_scope(key, "read")
        return service.create(session, key, settings.dashboard_session_hours)

    try:
        made = await run_in_threadpool(admit)
    except CharterError as exc:
        return page(
            request, "login.html", status_code=exc.status_code, next=target, error=exc.detail
        )
    response = RedirectResponse(target, status_code=303)
    set_cookie(request, response, made.token, int(settings.dashboard_session_hours * 3600))
    return response


@router.post("/logout")
async def logout(request: Request, session: SessionDep) -> Response:
    check_csrf(request, _form(await request.body()).get("csrf"))
    await run_in_threadpool(service.end, session, request.cookies.get(COOKIE))
    response = RedirectResponse(f"{rendering.PREFIX}/login", status_code=303)
    clear_cookie(request, response)
    return response


# --------------------------------------------------------------------------- overview


@router.get("/")
def overview(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    key: CurrentKey,
    hours: int = Query(default=6, ge=1, le=48),
) -> HTMLResponse:
    data = stats.overview(
        session, key.project_id, hours=hours, live_seconds=stats.live_window(settings)
    )
    per_minute = charts.line_chart(
        [
            charts.Series(
                "labels", [(m.minute.timestamp(), float(m.count)) for m in data.labels_per_minute]
            )
        ],
        title=f"Labels per minute, last {hours} h",
        x_label="time (UTC)",
        y_label="labels / minute",
        x_format=charts.clock,
        x_data=charts.iso,
        x_time=True,
        width=1100,
    )
    models = sorted({q.model for q in data.queue})
    queue = {(q.model, q.state): q.count for q in data.queue}
    by_state = [
        (state.value, float(sum(q.count for q in data.queue if q.state == state)))
        for state in ItemState
    ]
    queue_chart = charts.bar_chart(
        by_state if data.queue else [],
        title="Items of active jobs by state",
        x_label="state",
        y_label="items",
        empty="no active jobs",
    )
    return page(
        request,
        "overview.html",
        data=data,
        models=models,
        queue=queue,
        states=list(ItemState),
        per_minute=per_minute,
        queue_chart=queue_chart,
        hours=hours,
    )


# --------------------------------------------------------------------------- jobs


@router.get("/jobs")
def job_list(
    request: Request,
    session: SessionDep,
    key: CurrentKey,
    type: str | None = Query(default=None, max_length=32),
    model: str | None = Query(default=None, max_length=128),
    cursor: str | None = None,
    limit: PageSize = 25,
) -> HTMLResponse:
    try:
        job_type = JobType(type) if type else None
    except ValueError:
        raise Invalid(f"type must be one of {', '.join(JobType)}", field="type") from None
    rows, next_cursor = service.jobs_page(
        session, key.project_id, job_type, model or None, cursor, limit
    )
    counts = jobs.counts(session, [j.id for j in rows])
    listed = [(job, _progress(job, counts[job.id])) for job in rows]
    return page(
        request,
        "jobs.html",
        jobs=listed,
        next_cursor=next_cursor,
        types=list(JobType),
        type=type or "",
        model=model or "",
        limit=limit,
        models=service.job_models(session, key.project_id),
    )


def _progress(job: Job, counts: dict[str, int]) -> dict[str, object]:
    """Status and progress of a listed job, as the API derives them."""
    status = job_status(counts, job.status == JobStatus.CANCELLED)
    finished = sum(
        counts.get(s, 0) for s in (ItemState.DONE, ItemState.ABSTAINED, ItemState.FAILED)
    )
    return {"status": status, "finished": finished, "counts": counts}


@router.get("/jobs/{job_id}")
def job_page(request: Request, job_id: str, session: SessionDep, key: CurrentKey) -> HTMLResponse:
    job = jobs.get(session, key.project_id, job_id)
    data = stats.job_stats(session, key.project_id, job.id, chains=5)
    progress = charts.line_chart(
        [
            charts.Series(
                "finished items", [(p.minute.timestamp(), float(p.count)) for p in data.timeline]
            )
        ],
        title="Finished items over time",
        x_label="time (UTC)",
        y_label="items finished",
        x_format=charts.clock_seconds,
        x_data=charts.iso,
        x_time=True,
    )
    states = charts.bar_chart(
        [(state.value, float(data.counts.get(state, 0))) for state in ItemState],
        title="Items by state",
        x_label="state",
        y_label="items",
    )
    histogram = None
    if data.judge is not None:
        histogram = charts.bar_chart(
            [(f"{b.low:.1f}-{b.high:.1f}", float(b.count)) for b in data.judge.histogram]
            if data.judge.n
            else [],
            title="Soft labels P(A)",
            x_label="P(response A is better)",
            y_label="labels",
        )
    draws = None
    if data.principle_draws is not None:
        draws = charts.bar_chart(
            sorted(((p, float(n)) for p, n in data.principle_draws.items()), key=lambda d: -d[1]),
            title="Critique principles drawn",
            x_label="principle",
            y_label="times drawn",
        )
    can_cancel = data.status not in FINAL_JOB_STATUSES and "submit" in request.state.viewer.scopes
    review, verdicts = reviews.agreement_report(session, key.project_id, job_id=job.id)
    calibration = None
    if review.calibration and verdicts:
        calibration = charts.bar_chart(
            [(f"{b.low:.1f}-{b.high:.1f}", b.rate.rate or 0.0) for b in review.calibration],
            title="AI-human agreement by AI confidence",
            x_label="AI confidence max(P(A), 1 - P(A))",
            y_label="agreement rate",
        )
    return page(
        request,
        "job.html",
        job=job,
        data=data,
        progress=progress,
        states=states,
        histogram=histogram,
        draws=draws,
        can_cancel=can_cancel,
        review=review,
        review_verdicts=verdicts,
        review_queues=reviews.job_queues(session, job.id),
        calibration=calibration,
    )


@router.post("/jobs/{job_id}/cancel")
async def cancel_job(
    request: Request, job_id: str, session: SessionDep, key: CurrentKey
) -> Response:
    check_csrf(request, _form(await request.body()).get("csrf"))

    def cancel() -> None:
        # What POST /v1/jobs/{id}/cancel does, with the same scope and rate limit.
        request.app.state.rate_limiter.hit(key.id, "submit")
        check_scope(key, "submit")
        jobs.cancel(session, key.project_id, job_id)

    await run_in_threadpool(cancel)
    return RedirectResponse(f"{rendering.PREFIX}/jobs/{job_id}", status_code=303)


# --------------------------------------------------------------------------- human review

REVIEW_PAGE = 20


@router.get("/reviews/{queue_id}")
def review_page(
    request: Request,
    queue_id: str,
    session: SessionDep,
    key: CurrentKey,
    start: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> HTMLResponse:
    """A queue's items, with a verdict form on each for a key that may review."""
    queue = reviews.queue(session, key.project_id, queue_id)
    job = jobs.get(session, key.project_id, queue.job_id)
    comparison = reviews.is_comparison(job.type)
    cursor = review_cursor(start)
    rows, next_cursor = reviews.items_page(session, queue.id, cursor, REVIEW_PAGE)
    return page(
        request,
        "review.html",
        queue=queue,
        job=job,
        items=reviews.item_views(session, key.id, "", rows, comparison=comparison),
        reviewed=reviews.reviewed_count(session, queue.id),
        start=start,
        next_start=start + REVIEW_PAGE if next_cursor else None,
        can_review="review" in request.state.viewer.scopes,
    )


def review_cursor(start: int) -> str | None:
    """The items page after position ``start - 1`` (positions are the keyset)."""
    return pagination.encode_cursor(start - 1) if start else None


@router.post("/reviews/{queue_id}/items/{label_id}")
async def review_verdict(
    request: Request,
    queue_id: str,
    label_id: Annotated[int, Path(ge=1, le=2**63 - 1)],
    session: SessionDep,
    key: CurrentKey,
) -> Response:
    form = _form(await request.body())
    check_csrf(request, form.get("csrf"))
    verdict = form.get("verdict", "")
    values: dict[str, object] = {"note": form.get("note") or None}
    if verdict in ("A", "B", "tie"):
        values["choice"] = verdict
    elif verdict in ("yes", "no"):
        values["satisfies"] = verdict == "yes"
    else:
        raise Invalid("choose a verdict", field="verdict")
    try:
        spec = VerdictCreate.model_validate(values)
    except ValidationError as exc:
        raise Invalid(str(exc.errors()[0]["msg"]), field="note") from exc

    def give() -> None:
        # What POST /v1/reviews/queues/{id}/items/{label}/verdicts does, same scope and limit.
        request.app.state.rate_limiter.hit(key.id, "review")
        check_scope(key, "review")
        reviews.give_verdict(session, key, queue_id, label_id, spec)

    await run_in_threadpool(give)
    back = f"{rendering.PREFIX}/reviews/{queue_id}"
    return RedirectResponse(f"{back}?start={form.get('start', '0')}#label-{label_id}", 303)


# --------------------------------------------------------------------------- models


@router.get("/models")
def models_page(request: Request, session: SessionDep, key: CurrentKey) -> HTMLResponse:
    rows = stats.model_stats(session, key.project_id)
    histograms = [
        charts.bar_chart(
            [(f"{b.low:.1f}-{b.high:.1f}", float(b.count)) for b in m.judge.histogram]
            if m.judge.n
            else [],
            title=f"{m.model}: soft labels P(A)",
            x_label="P(response A is better)",
            y_label="labels",
        )
        for m in rows
    ]
    return page(request, "models.html", models=list(zip(rows, histograms, strict=True)))


# --------------------------------------------------------------------------- constitutions


@router.get("/constitutions")
def constitution_list(request: Request, session: SessionDep, key: CurrentKey) -> HTMLResponse:
    return page(
        request, "constitutions.html", constitutions=constitutions.listing(session, key.project_id)
    )


@router.get("/constitutions/{name}")
def constitution_page(
    request: Request,
    name: str,
    session: SessionDep,
    key: CurrentKey,
    version: int | None = Query(default=None, ge=1),
    before: int | None = Query(default=None, ge=1, alias="from"),
    after: int | None = Query(default=None, ge=1, alias="to"),
) -> HTMLResponse:
    versions = constitutions.versions(session, key.project_id, name)
    numbers = [v.version for v in versions]
    shown = next((v for v in versions if v.version == (version or numbers[-1])), None)
    if shown is None:
        raise Invalid(f"{name} has no version {version}", field="version")
    after = after or numbers[-1]
    before = before or (numbers[-2] if len(numbers) > 1 else numbers[-1])
    diff = constitutions.compare(session, key.project_id, name, before, after)
    return page(
        request,
        "constitution.html",
        name=name,
        versions=versions,
        shown=shown,
        before=before,
        after=after,
        diff=diff,
        changes=views.diff_lines(diff),
    )


# --------------------------------------------------------------------------- datasets


@router.get("/datasets")
def dataset_list(
    request: Request,
    session: SessionDep,
    key: CurrentKey,
    cursor: str | None = None,
    limit: PageSize = 50,
) -> HTMLResponse:
    rows, next_cursor = datasets.page(session, key.project_id, cursor, limit)
    latest = datasets.latest_versions(session, rows)
    return page(
        request,
        "datasets.html",
        datasets=[(d, latest.get(d.id)) for d in rows],
        next_cursor=next_cursor,
    )


@router.get("/datasets/{name}")
def dataset_page(request: Request, name: str, session: SessionDep, key: CurrentKey) -> HTMLResponse:
    dataset, versions = datasets.versions(session, key.project_id, name)
    return page(request, "dataset.html", dataset=dataset, versions=list(reversed(versions)))


@router.get("/datasets/{ref}/export")
def dataset_export(
    ref: str,
    request: Request,
    session: SessionDep,
    key: CurrentKey,
    format: Literal["jsonl", "parquet"] = Query(default="jsonl"),
) -> Response:
    """The API's export, for a browser: the session stands in for the key header."""
    return dataset_api.export_dataset(ref, request, session, key, format, 0)


# --------------------------------------------------------------------------- training runs


@router.get("/runs")
def run_list(
    request: Request,
    session: SessionDep,
    key: CurrentKey,
    cursor: str | None = None,
    limit: PageSize = 25,
) -> HTMLResponse:
    rows, next_cursor = runs.page(session, key.project_id, cursor, limit)
    return page(
        request,
        "runs.html",
        runs=rows,
        refs=runs.dataset_refs(session, rows),
        next_cursor=next_cursor,
    )


@router.get("/runs/{run_id}")
def run_page(request: Request, run_id: str, session: SessionDep, key: CurrentKey) -> HTMLResponse:
    run = runs.get(session, key.project_id, run_id)
    points = service.all_metrics(session, run.id, METRIC_POINTS)
    series: dict[str, list[tuple[float, float]]] = {}
    for point in points:
        for name, value in point.metrics.items():
            series.setdefault(name, []).append((float(point.step), float(value)))
    curves = [
        charts.line_chart(
            [charts.Series(name, values)],
            title=name,
            x_label="step",
            y_label=name,
            y_zero=False,
        )
        for name, values in sorted(series.items(), key=lambda kv: views.metric_order(kv[0]))
    ]
    return page(
        request,
        "run.html",
        run=run,
        dataset=runs.dataset_refs(session, [run]).get(run.id),
        curves=curves,
        reports=len(points),
    )


# --------------------------------------------------------------------------- evaluations


@router.get("/evals")
def eval_list(
    request: Request,
    session: SessionDep,
    key: CurrentKey,
    cursor: str | None = None,
    limit: PageSize = 25,
) -> HTMLResponse:
    rows, next_cursor = evals.page(session, key.project_id, cursor, limit)
    return page(
        request,
        "evals.html",
        evals=[eval_api.out(session, r) for r in rows],
        next_cursor=next_cursor,
    )


@router.get("/evals/{eval_id}")
def eval_page(request: Request, eval_id: str, session: SessionDep, key: CurrentKey) -> HTMLResponse:
    """An evaluation's report: the numbers of ``GET /v1/evals/{id}/report``, drawn."""
    data = eval_report.build(session, evals.get(session, key.project_id, eval_id))
    configs = data["configs"]
    accuracy = charts.bar_chart(
        [
            (name, float(c["metrics"]["accuracy"]["value"]))
            for name, c in configs.items()
            if c["metrics"]["accuracy"]["value"] is not None
        ],
        title="Accuracy, swap-averaged",
        x_label="judge configuration",
        y_label="share right",
    )
    calibration = charts.line_chart(
        [
            charts.Series(
                name,
                [
                    (b["mean_predicted"], b["mean_observed"])
                    for b in c["metrics"]["calibration"]
                    if b["count"]
                ],
            )
            for name, c in configs.items()
        ],
        title="Calibration",
        x_label="mean predicted P(A) in the bin",
        y_label="observed: A is better",
        empty="no labels yet",
    )
    return page(
        request,
        "eval.html",
        report=data,
        accuracy=accuracy,
        calibration=calibration,
        defences=eval_plans.DEFENCE_NAMES,
    )


# --------------------------------------------------------------------------- policy evaluations


@router.get("/policy-evals")
def policy_eval_list(
    request: Request,
    session: SessionDep,
    key: CurrentKey,
    cursor: str | None = None,
    limit: PageSize = 25,
) -> HTMLResponse:
    rows, next_cursor = policy_evals.page(session, key.project_id, cursor, limit)
    return page(
        request,
        "policy_evals.html",
        evals=[policy_eval_api.out(session, r) for r in rows],
        next_cursor=next_cursor,
    )


def _elo(rating: dict[str, float]) -> tuple[float, float, float]:
    return rating["elo"], rating["low"], rating["high"]


@router.get("/policy-evals/{eval_id}")
def policy_eval_page(
    request: Request, eval_id: str, session: SessionDep, key: CurrentKey
) -> HTMLResponse:
    """A policy evaluation's Elo: the numbers of ``GET /v1/policy-evals/{id}/report``."""
    run = policy_evals.get(session, key.project_id, eval_id)
    data = policy_eval_report.build(session, run)
    plot = None
    if data["plot"] is not None:
        x_judge, y_judge = data["plot"]
        by_x = {r["policy"]: r for r in data["judges"][x_judge]["ratings"]}
        by_y = {r["policy"]: r for r in data["judges"][y_judge]["ratings"]}
        plot = charts.scatter(
            [
                charts.Estimate2D(name, *_elo(by_x[name]), *_elo(by_y[name]))
                for name in by_x
                if name in by_y
            ],
            title=f"{y_judge} Elo against {x_judge} Elo",
            x_label=f"{x_judge} Elo ({data['anchor']} = 0)",
            y_label=f"{y_judge} Elo",
            empty="no ratings yet",
        )
    return page(
        request,
        "policy_eval.html",
        report=data,
        evaluation=policy_eval_api.out(session, run),
        plot=plot,
    )


# --------------------------------------------------------------------------- public inputs


@router.get("/public-inputs")
def public_input_list(request: Request, session: SessionDep, key: CurrentKey) -> HTMLResponse:
    rows = public_inputs.listing(session, key.project_id)
    return page(request, "public_inputs.html", inputs=[public_input_api.out(r) for r in rows])


@router.get("/public-inputs/{ref}")
def public_input_page(
    request: Request,
    ref: str,
    session: SessionDep,
    key: CurrentKey,
    query: Annotated[AnalysisQuery, Query()],
) -> HTMLResponse:
    """The opinion map, the consensus ranking and the divisive statements: the numbers
    of ``GET /v1/public-inputs/{ref}/analysis``, drawn."""
    row = public_inputs.resolve(session, key.project_id, ref)
    query = query.model_copy(update={"participants": True})
    analysis = public_input_api.analysis_out(row, public_inputs.analyse(row, query), query)
    members = analysis.participants or []
    placed = [p for p in members if p.x is not None and p.y is not None]
    groups = [(f"group {g.index} ({g.size})", g.index) for g in analysis.groups]
    series = [
        charts.Series(name, [(p.x, p.y) for p in placed if p.group == index])
        for name, index in [*groups, ("too few votes", None)]
    ]
    opinion_map = charts.line_chart(
        [s for s in series if s.points],
        title="Opinion map: each participant on the votes' first two components",
        x_label="component 1",
        y_label="component 2",
        y_zero=False,
        lines=False,
    )
    return page(
        request,
        "public_input.html",
        public_input=public_input_api.out(row),
        analysis=analysis,
        query=query,
        opinion_map=opinion_map,
        divisive=sorted(
            (s for s in analysis.statements if s.divisive), key=lambda s: -s.divisiveness
        ),
    )
