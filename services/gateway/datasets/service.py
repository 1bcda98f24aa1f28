"""Datasets: filters frozen into immutable, numbered versions; uploads; mixing.

A version's rows live in ``dataset_rows`` as ``seq = 0 .. row_count - 1``. A
version over labels is created here in state ``freezing`` and filled in the
background by :mod:`.freezing`: label rows are chosen and numbered by
``INSERT ... SELECT`` in keyset batches (so a million labels never pass through
Python), then mixed-in rows are copied from the source version. Uploads are
bounded (``max_batch_rows``) and stored within their request, ``ready`` at once.
Nothing updates or deletes a ready version's rows, and the labels they point to
cannot be deleted while they are referenced.

Interleaving: with ``n`` label rows and ``m`` mixed rows (``N = n + m``), label
``i`` (in label-id order) goes to ``seq = floor(i * N / n)`` and mixed row ``j``
(in draw order) to ``ceil((j + 1) * N / m) - 1``; the two sets partition
``0 .. N - 1`` and spread the mixed rows evenly.
"""

from __future__ import annotations

import json
import math
import re
from datetime import UTC
from typing import Any

from sqlalchemy import (
    ColumnElement,
    and_,
    case,
    false,
    func,
    or_,
    select,
    text,
)
from sqlalchemy.orm import Session

from charter.core import refs
from charter.core.constitution import parse_ref
from charter.core.documents import Bounds
from charter.core.export import DEFAULT_LABEL_KINDS, LABEL_KINDS
from charter.db.bulk import bulk_insert
from charter.db.models import (
    Constitution,
    ConstitutionVersion,
    Dataset,
    DatasetRow,
    DatasetVersion,
    EvalJob,
    Job,
    Label,
    as_utc,
    utcnow,
)
from charter.errors import Conflict, Invalid, NotFound
from services.gateway.datasets import export
from services.gateway.datasets.schemas import (
    NAME_PATTERN,
    UPLOAD_MODELS,
    DatasetCreate,
    DatasetFilter,
    MixSpec,
)
from services.gateway.jsonl import MAX_LINE_BYTES, parse_lines
from services.gateway.pagination import project_page
from services.gateway.reviews import service as reviews

_NAME = re.compile(NAME_PATTERN)


# --------------------------------------------------------------------------- look-ups


def _dataset(session: Session, project_id: str, name: str) -> Dataset | None:
    return session.scalar(
        select(Dataset).where(Dataset.project_id == project_id, Dataset.name == name)
    )


def resolve(
    session: Session, project_id: str, ref: str, *, field: str = "ref", missing: type = NotFound
) -> tuple[Dataset, DatasetVersion]:
    """``name`` (latest version) or ``name@version`` within the project; a ref that
    cannot name a dataset (see :mod:`charter.core.refs`) is not found either."""
    try:
        name, number = refs.parse_ref(ref, _NAME, what="dataset")
    except ValueError:
        raise missing(f"dataset {ref!r} not found", field=field) from None
    dataset = _dataset(session, project_id, name)
    if dataset is None:
        raise missing(f"dataset {ref!r} not found", field=field)
    query = select(DatasetVersion).where(DatasetVersion.dataset_id == dataset.id)
    if number is not None:
        query = query.where(DatasetVersion.version == number)
    else:
        query = query.order_by(DatasetVersion.version.desc()).limit(1)
    version = session.scalar(query)
    if version is None:
        raise missing(f"dataset {ref!r} not found", field=field)
    return dataset, version


def page(
    session: Session, project_id: str, cursor: str | None, limit: int
) -> tuple[list[Dataset], str | None]:
    """The project's datasets, newest first (their latest versions: :func:`latest_versions`)."""
    return project_page(session, Dataset, project_id, cursor, limit)


def versions(session: Session, project_id: str, name: str) -> tuple[Dataset, list[DatasetVersion]]:
    dataset = _dataset(session, project_id, name)
    if dataset is None:
        raise NotFound(f"dataset {name!r} not found", field="name")
    rows = session.scalars(
        select(DatasetVersion)
        .where(DatasetVersion.dataset_id == dataset.id)
        .order_by(DatasetVersion.version)
    )
    return dataset, list(rows)


def latest_versions(session: Session, datasets: list[Dataset]) -> dict[str, DatasetVersion]:
    if not datasets:
        return {}
    newest = (
        select(DatasetVersion.dataset_id, func.max(DatasetVersion.version).label("version"))
        .where(DatasetVersion.dataset_id.in_([d.id for d in datasets]))
        .group_by(DatasetVersion.dataset_id)
        .subquery()
    )
    rows = session.scalars(
        select(DatasetVersion).join(
            newest,
            and_(
                newest.c.dataset_id == DatasetVersion.dataset_id,
                newest.c.version == DatasetVersion.version,
            ),
        )
    )
    return {v.dataset_id: v for v in rows}


def upload_kind(session: Session, project_id: str, name: str, kind: str | None) -> str:
    """The kind an upload to ``name`` is validated as: the dataset's, or the one given."""
    return _dataset_for(session, project_id, name, kind).kind


def _dataset_for(session: Session, project_id: str, name: str, kind: str | None) -> Dataset:
    """The named dataset, created on first use; its kind never changes."""
    dataset = _dataset(session, project_id, name)
    if dataset is None:
        if kind is None:
            raise Invalid(
                f"dataset {name!r} is new: say its kind (sft, preference or classifier)",
                field="kind",
            )
        dataset = Dataset(project_id=project_id, name=name, kind=kind)
        session.add(dataset)
        session.flush()
    elif kind is not None and dataset.kind != kind:
        raise Invalid(f"dataset {name!r} holds {dataset.kind} rows, not {kind}", field="kind")
    return dataset


def _new_version(session: Session, dataset: Dataset, **values: Any) -> DatasetVersion:
    latest = session.scalar(
        select(func.max(DatasetVersion.version)).where(DatasetVersion.dataset_id == dataset.id)
    )
    version = DatasetVersion(dataset_id=dataset.id, version=(latest or 0) + 1, **values)
    session.add(version)
    session.flush()
    return version


# --------------------------------------------------------------------------- filters


def _conditions(
    session: Session, project_id: str, kind: str, spec: DatasetFilter
) -> tuple[list[ColumnElement[bool]], dict[str, Any]]:
    """SQL conditions on ``labels`` for the filter, and the filter as recorded."""
    allowed = LABEL_KINDS[kind]
    kinds = list(spec.kinds or DEFAULT_LABEL_KINDS[kind])
    for label_kind in kinds:
        if label_kind not in allowed:
            raise Invalid(
                f"label kind {label_kind!r} has no {kind} rows "
                f"(a {kind} dataset takes {', '.join(allowed)})",
                field="filter.kinds",
            )
    conditions: list[ColumnElement[bool]] = [
        Label.project_id == project_id,
        Label.kind.in_(kinds),
        Label.completion.is_not(None) if kind == "sft" else Label.p_a.is_not(None),
    ]
    if spec.job_ids is not None:
        job_ids = list(dict.fromkeys(spec.job_ids))
        found = set(
            session.scalars(select(Job.id).where(Job.id.in_(job_ids), Job.project_id == project_id))
        )
        for job_id in job_ids:
            if job_id not in found:
                raise Invalid(f"job {job_id!r} not found", field="filter.job_ids")
        conditions.append(Label.job_id.in_(job_ids))
    else:  # a judge evaluation's labels (gold items, injected variants) are no training data
        conditions.append(Label.job_id.not_in(select(EvalJob.job_id)))
    if spec.constitution is not None:
        conditions.append(
            Label.constitution_version_id.in_(_constitution_versions(session, project_id, spec))
        )
    if kind != "preference":
        for name in ("min_confidence", "exclude_swap_disagreements"):
            if getattr(spec, name) not in (None, False):
                raise Invalid(f"{name} applies to preference datasets only", field=f"filter.{name}")
    if spec.min_confidence is not None:
        chosen = case((Label.p_a >= 0.5, Label.p_a), else_=1.0 - Label.p_a)
        conditions.append(chosen >= spec.min_confidence)
    if spec.exclude_swap_disagreements:
        conditions.append(
            or_(Label.swap_disagreement.is_(None), Label.swap_disagreement == false())
        )
    if spec.review is not None:
        conditions.append(reviews.label_condition(project_id, spec.review, kind))
    if spec.created_after is not None:
        conditions.append(Label.created_at >= as_utc(spec.created_after).astimezone(UTC))
    if spec.created_before is not None:
        conditions.append(Label.created_at < as_utc(spec.created_before).astimezone(UTC))
    recorded = spec.model_dump(mode="json", exclude_none=True) | {"kinds": kinds}
    return conditions, recorded


def _constitution_versions(session: Session, project_id: str, spec: DatasetFilter) -> list[str]:
    ref = spec.constitution or ""
    try:
        name, number = parse_ref(ref)
    except ValueError as exc:
        raise Invalid(str(exc), field="filter.constitution") from exc
    query = (
        select(ConstitutionVersion.id)
        .join(Constitution, Constitution.id == ConstitutionVersion.constitution_id)
        .where(Constitution.project_id == project_id, Constitution.name == name)
    )
    if number is not None:
        query = query.where(ConstitutionVersion.version == number)
    ids = list(session.scalars(query))
    if not ids:
        raise Invalid(f"constitution {ref!r} not found", field="filter.constitution")
    return ids


# --------------------------------------------------------------------------- freezing


def mixed_count(ratio: float, label_rows: int, available: int) -> int:
    """round(ratio / (1 - ratio) * n), half up, capped by the source's size."""
    return min(math.floor(ratio / (1.0 - ratio) * label_rows + 0.5), available)


def mixed_positions(label_rows: int, mixed: int, lo: int = 0, hi: int | None = None) -> list[int]:
    """The ``seq`` of mixed row ``j`` for ``j = lo .. hi - 1`` (all by default; see the
    module doc)."""
    total = label_rows + mixed
    return [
        ((j + 1) * total + mixed - 1) // mixed - 1 for j in range(lo, mixed if hi is None else hi)
    ]


def create(
    session: Session, project_id: str, spec: DatasetCreate
) -> tuple[Dataset, DatasetVersion]:
    """A new version in state ``freezing`` over the labels the filter selects now.

    Only the snapshot is fixed here (how many labels, and the largest label id, so
    that labels written later are never taken); :mod:`.freezing` copies the rows in
    the background.
    """
    conditions, recorded = _conditions(session, project_id, spec.kind, spec.filter)
    n, max_id = session.execute(select(func.count(), func.max(Label.id)).where(*conditions)).one()
    if n == 0:
        raise Invalid("the filter matches no labels", field="filter")
    mixed = 0
    mix: dict[str, Any] | None = None
    if spec.mix is not None:
        source, mix = _mix_source(session, project_id, spec.kind, spec.mix)
        mixed = mixed_count(spec.mix.ratio, n, source.row_count)
        mix["count"] = mixed
    dataset = _dataset_for(session, project_id, spec.name, spec.kind)
    version = _new_version(
        session,
        dataset,
        filter=recorded,
        mix=mix,
        state="freezing",
        rows_total=n + mixed,
        freeze_cursor=0,
        freeze_max_label_id=max_id,
    )
    return dataset, version


def conditions_of(
    session: Session, project_id: str, kind: str, version: DatasetVersion
) -> list[ColumnElement[bool]]:
    """The SQL conditions of a version's recorded filter (to resume freezing it)."""
    spec = DatasetFilter.model_validate(version.filter)
    return _conditions(session, project_id, kind, spec)[0]


def require_ready(dataset: Dataset, version: DatasetVersion, *, field: str = "ref") -> None:
    """409 unless the version is ``ready``: a version still freezing has partial rows."""
    if version.state == "ready":
        return
    ref = f"{dataset.name}@{version.version}"
    if version.state == "freezing":
        raise Conflict(
            f"dataset {ref} is still freezing ({version.rows_done} of {version.rows_total} "
            "rows); wait until its state is ready",
            field=field,
        )
    raise Conflict(f"dataset {ref} is {version.state}: {version.error}", field=field)


def check_mix(session: Session, project_id: str, kind: str, mix: MixSpec) -> str:
    """The ``name@version`` a ``kind`` dataset mixing ``mix`` in would read, after the
    checks :func:`create` makes of it (errors name ``mix.<field>``)."""
    return _mix_source(session, project_id, kind, mix)[1]["source"]


def _mix_source(
    session: Session, project_id: str, kind: str, mix: MixSpec
) -> tuple[DatasetVersion, dict[str, Any]]:
    dataset, source = resolve(session, project_id, mix.source, field="mix.source", missing=Invalid)
    if dataset.kind != kind:
        raise Invalid(
            f"{mix.source!r} holds {dataset.kind} rows; a {kind} dataset cannot mix them in",
            field="mix.source",
        )
    require_ready(dataset, source, field="mix.source")
    if source.row_count == 0:
        raise Invalid(f"{mix.source!r} has no rows", field="mix.source")
    ref = f"{dataset.name}@{source.version}"
    return source, {"source": ref, "ratio": mix.ratio, "seed": mix.seed}


def copy_rows(
    session: Session, source_id: str, version_id: str, picks: list[int], targets: list[int]
) -> None:
    """Copy source rows ``picks[j]`` to ``targets[j]`` of the new version, in one statement."""
    params: dict[str, Any] = {"version_id": version_id, "source_id": source_id}
    if session.get_bind().dialect.name == "postgresql":
        pairs = "unnest(CAST(:picks AS integer[]), CAST(:targets AS integer[])) AS p(src, dst)"
        src, dst = "p.src", "p.dst"
        params |= {"picks": picks, "targets": targets}
    else:
        pairs = "json_each(:pairs) AS p"
        src, dst = "json_extract(p.value, '$[0]')", "json_extract(p.value, '$[1]')"
        params["pairs"] = json.dumps(list(zip(picks, targets, strict=True)))
    statement = text(
        'INSERT INTO dataset_rows (version_id, seq, label_id, "row") '
        f'SELECT :version_id, {dst}, r.label_id, r."row" FROM {pairs} '
        f"JOIN dataset_rows AS r ON r.version_id = :source_id AND r.seq = {src}"
    )
    copied = session.execute(statement.execution_options(preserve_rowcount=True), params).rowcount
    if copied != len(picks):
        raise Conflict("the mix source changed while the version was being frozen; retry")


# --------------------------------------------------------------------------- uploads


def parse_jsonl(
    body: bytes,
    kind: str,
    max_rows: int,
    *,
    bounds: Bounds = Bounds(),
    max_line_bytes: int = MAX_LINE_BYTES,
) -> list[dict[str, Any]]:
    """Parse (strictly) and validate every line in the kind's TRL shape; errors name
    the line and the field."""
    model = UPLOAD_MODELS[kind]
    return parse_lines(
        body,
        lambda value: model.model_validate(value).canonical(),
        max_rows,
        "upload",
        bounds=bounds,
        max_line_bytes=max_line_bytes,
    )


def upload(
    session: Session,
    project_id: str,
    name: str,
    kind: str | None,
    rows: list[dict[str, Any]],
    *,
    source: dict[str, Any] | None = None,
) -> tuple[Dataset, DatasetVersion]:
    """Rows (already validated and in their export shape) as a new version of ``name``:
    a user's upload, or what ``source`` (recorded as the version's filter) made."""
    dataset = _dataset_for(session, project_id, name, kind)
    n = len(rows)
    version = _new_version(
        session, dataset, filter=source or {"upload": True}, mix=None, row_count=n,
        rows_total=n, rows_done=n,
    )  # fmt: skip
    version_id = version.id
    numbered = ((version_id, seq, row) for seq, row in enumerate(rows))
    bulk_insert(session, DatasetRow, ("version_id", "seq", "row"), numbered)
    version.checksum = export.checksum(session, version.id, dataset.kind, n)
    version.ready_at = utcnow()
    session.flush()
    return dataset, version


def check_name(name: str) -> None:
    if not _NAME.fullmatch(name):  # not match: "$" also matches before a final newline
        raise Invalid(
            "a dataset name is 1-128 letters, digits, '.', '_' or '-', starting with a "
            "letter or digit",
            field="name",
        )
