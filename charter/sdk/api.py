"""Every operation of the API, as :class:`~charter.sdk.calls.Call` builders grouped by
resource. A client binds each group (``client.jobs.get(id)`` sends the call and
returns a :class:`~charter.sdk.models.JobOut`); a paged listing returns an iterator
over every item of every page; a ``wait``/``create(wait=True)`` is a procedure the
client drives with its own sleep.
"""

from __future__ import annotations

import builtins  # the groups have a `list` method: annotations say builtins.list
import json
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from charter.core.jobs import FINAL_JOB_STATUSES, FINAL_RUN_STATUSES
from charter.sdk import models as m
from charter.sdk.calls import Call, Procedure, Sleep
from charter.sdk.errors import FreezeFailed
from charter.sdk.export import Export
from charter.sdk.uploads import ProgressCallback, detect

Body = BaseModel | Mapping[str, Any] | None


def _model(*names: str) -> Any:
    """The generated model by the first of ``names`` it has: FastAPI names a schema by
    its module path when two routers' schemas share a name (``ItemOut``)."""
    for name in names:
        if hasattr(m, name):
            return getattr(m, name)
    return None  # answered as plain JSON rather than failing on import


JobItem = _model("ItemOut", "ServicesGatewayJobsSchemasItemOut")
ReviewItem = _model("ReviewItemOut", "ServicesGatewayReviewsSchemasItemOut")


def _body(spec: Body, fields: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON body from a model (its set fields) or a mapping, plus keyword fields."""
    if isinstance(spec, BaseModel):
        base = spec.model_dump(mode="json", exclude_unset=True, by_alias=True)
    else:
        base = dict(spec or {})
    return {**base, **{k: v for k, v in fields.items() if v is not None}}


def value(resource: Any, name: str) -> Any:
    """A field of a decoded answer, whether a model or plain JSON."""
    return resource[name] if isinstance(resource, Mapping) else getattr(resource, name)


def poll(
    fetch: Callable[[], Call[Any]],
    done: Callable[[Any], bool],
    *,
    timeout: float,
    interval: float,
    first: float | None = None,
    on_update: Callable[[Any], None] | None = None,
) -> Procedure[Any]:
    """Fetch until ``done`` (or ``timeout`` seconds: the resource as it stands);
    starting at ``first`` seconds between polls and doubling up to ``interval``."""
    deadline = time.monotonic() + timeout
    delay = interval if first is None else first
    while True:
        resource = yield fetch()
        if on_update:
            on_update(resource)
        if done(resource) or time.monotonic() > deadline:
            return resource
        yield Sleep(delay)
        delay = min(delay * 2, interval)


class Health:
    def live(self) -> Call[dict[str, Any]]:
        return Call("GET", "/healthz")

    def ready(self) -> Call[m.Ready]:
        """200 with the database and broker state (503 with what is down)."""
        return Call("GET", "/readyz", model=m.Ready)


class Constitutions:
    def push(
        self, source: Path | str | bytes, *, yaml: bool | None = None
    ) -> Call[m.ConstitutionVersionOut]:
        """A YAML or JSON document (a path, or its bytes); identical content answers
        the existing version (``created`` false)."""
        if isinstance(source, bytes):
            content, is_yaml = source, bool(yaml)
        else:
            path = Path(source)
            content = path.read_bytes()
            is_yaml = path.suffix in {".yaml", ".yml"} if yaml is None else yaml
        media = "application/yaml" if is_yaml else "application/json"
        return Call(
            "POST", "/v1/constitutions", content=content,
            headers={"Content-Type": media}, model=m.ConstitutionVersionOut,
        )  # fmt: skip

    def list(self) -> Call[builtins.list[m.ConstitutionSummary]]:
        return Call("GET", "/v1/constitutions", model=builtins.list[m.ConstitutionSummary])

    def get(self, ref: str) -> Call[m.ConstitutionVersionOut]:
        """``name`` (the latest version) or ``name@version``."""
        return Call("GET", f"/v1/constitutions/{ref}", model=m.ConstitutionVersionOut)

    def versions(self, name: str) -> Call[builtins.list[m.ConstitutionVersionOut]]:
        return Call(
            "GET",
            f"/v1/constitutions/{name}/versions",
            model=builtins.list[m.ConstitutionVersionOut],
        )

    def diff(self, name: str, before: int, after: int) -> Call[m.DiffOut]:
        params = {"from": before, "to": after}
        return Call("GET", f"/v1/constitutions/{name}/diff", params=params, model=m.DiffOut)


class Batches:
    def create(self, rows: Iterable[Mapping[str, Any]], name: str = "") -> Call[m.BatchOut]:
        body = {"name": name, "rows": [dict(r) for r in rows]}
        return Call("POST", "/v1/batches", json=body, model=m.BatchOut)

    def upload(
        self,
        path: Path | str,
        name: str = "",
        *,
        format: str | None = None,
        progress: ProgressCallback | None = None,
    ) -> Call[m.BatchOut]:
        """Prompts from JSONL, CSV, Parquet or a ``datasets`` directory, streamed."""
        source = detect(path, format)
        return Call(
            "POST", "/v1/batches/upload", params={"name": name or source.path.stem},
            content=source.body(progress), headers={"Content-Type": "application/x-ndjson"},
            model=m.BatchOut,
        )  # fmt: skip

    def list(self, *, limit: int | None = None) -> Call[m.BatchOut]:
        return Call("GET", "/v1/batches", params={"limit": limit}, model=m.BatchOut, paged=True)

    def get(self, batch_id: str) -> Call[m.BatchOut]:
        return Call("GET", f"/v1/batches/{batch_id}", model=m.BatchOut)

    def prompts(self, batch_id: str, *, limit: int | None = None) -> Call[m.PromptOut]:
        return Call(
            "GET", f"/v1/batches/{batch_id}/prompts", params={"limit": limit},
            model=m.PromptOut, paged=True,
        )  # fmt: skip


class Jobs:
    def submit(
        self, spec: Body = None, /, *, idempotency_key: str | None = None, **fields: Any
    ) -> Call[m.JobOut]:
        """A :class:`~charter.sdk.models.JobCreate` (or its fields: ``type``,
        ``batch_id``, ``constitution``, ``model``, ``params``, ``seed``)."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return Call("POST", "/v1/jobs", json=_body(spec, fields), headers=headers, model=m.JobOut)

    def list(self, *, limit: int | None = None) -> Call[m.JobOut]:
        return Call("GET", "/v1/jobs", params={"limit": limit}, model=m.JobOut, paged=True)

    def get(self, job_id: str) -> Call[m.JobOut]:
        return Call("GET", f"/v1/jobs/{job_id}", model=m.JobOut)

    def cancel(self, job_id: str) -> Call[m.JobOut]:
        return Call("POST", f"/v1/jobs/{job_id}/cancel", model=m.JobOut)

    def results(self, job_id: str, *, limit: int | None = 500) -> Call[m.LabelOut]:
        return Call(
            "GET", f"/v1/jobs/{job_id}/results", params={"limit": limit},
            model=m.LabelOut, paged=True,
        )  # fmt: skip

    def items(
        self, job_id: str, state: str | None = None, *, limit: int | None = None
    ) -> Call[Any]:
        return Call(
            "GET", f"/v1/jobs/{job_id}/items", params={"state": state, "limit": limit},
            model=JobItem, paged=True,
        )  # fmt: skip

    def wait(
        self,
        job_id: str,
        *,
        timeout: float = 3600,
        poll: float = 1.0,
        on_update: Callable[[Any], None] | None = None,
        raw: bool = False,
    ) -> Procedure[m.JobOut]:
        """The job once completed or cancelled, or as it stands after ``timeout``."""
        return _until_status(
            self.get, job_id, FINAL_JOB_STATUSES, timeout=timeout, interval=poll,
            on_update=on_update, raw=raw,
        )  # fmt: skip


poll_ = poll  # the name `poll` is a parameter of the wait methods


def _until_status(
    get: Callable[[str], Call[Any]],
    ident: str,
    final: frozenset[str],
    *,
    timeout: float,
    interval: float,
    on_update: Callable[[Any], None] | None,
    raw: bool,
    field: str = "status",
) -> Procedure[Any]:
    """Poll ``get(ident)`` until its ``field`` (``status``) is one of ``final`` (or
    ``timeout``)."""
    fetch = (lambda: get(ident).raw()) if raw else (lambda: get(ident))
    done = lambda answer: value(answer, field) in final  # noqa: E731
    return poll_(fetch, done, timeout=timeout, interval=interval, on_update=on_update)


class Runs:
    def create(
        self, spec: Body = None, /, *, idempotency_key: str | None = None, **fields: Any
    ) -> Call[m.RunOut]:
        """A training run: a :class:`~charter.sdk.models.RunCreate` member (or its
        fields: ``type``, ``dataset``, ``base_model``, ``config``, ...)."""
        if isinstance(spec, m.RunCreate):
            spec = spec.root
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return Call("POST", "/v1/runs", json=_body(spec, fields), headers=headers, model=m.RunOut)

    def list(self, *, limit: int | None = None) -> Call[m.RunOut]:
        return Call("GET", "/v1/runs", params={"limit": limit}, model=m.RunOut, paged=True)

    def get(self, run_id: str) -> Call[m.RunOut]:
        return Call("GET", f"/v1/runs/{run_id}", model=m.RunOut)

    def metrics(self, run_id: str, *, limit: int | None = 1000) -> Call[m.MetricOut]:
        return Call(
            "GET", f"/v1/runs/{run_id}/metrics", params={"limit": limit},
            model=m.MetricOut, paged=True,
        )  # fmt: skip

    def cancel(self, run_id: str) -> Call[m.RunOut]:
        return Call("POST", f"/v1/runs/{run_id}/cancel", model=m.RunOut)

    def resume(self, run_id: str) -> Call[m.RunOut]:
        """Queue a failed or cancelled run again (from its last checkpoint)."""
        return Call("POST", f"/v1/runs/{run_id}/resume", model=m.RunOut)

    def wait(
        self,
        run_id: str,
        *,
        timeout: float = 24 * 3600,
        poll: float = 2.0,
        on_update: Callable[[Any], None] | None = None,
        raw: bool = False,
    ) -> Procedure[m.RunOut]:
        """The run once completed, failed or cancelled, or as it stands after ``timeout``."""
        return _until_status(
            self.get, run_id, FINAL_RUN_STATUSES, timeout=timeout, interval=poll,
            on_update=on_update, raw=raw,
        )  # fmt: skip

    # The trainer's side: every report presents the claim's lease_token.
    def claim(self, owner: str, types: builtins.list[str] | None = None) -> Call[m.Claimed | None]:
        """Lease the oldest queued run; None when nothing is queued (204)."""
        body = {"owner": owner, "types": types}
        return Call("POST", "/v1/runs/claim", json=body, model=m.Claimed)

    def heartbeat(self, run_id: str, lease_token: str) -> Call[m.RunOut]:
        body = {"lease_token": lease_token}
        return Call("POST", f"/v1/runs/{run_id}/heartbeat", json=body, model=m.RunOut)

    def report_metrics(
        self, run_id: str, lease_token: str, points: builtins.list[dict[str, Any]]
    ) -> Call[None]:
        body = {"lease_token": lease_token, "points": points}
        return Call("POST", f"/v1/runs/{run_id}/metrics", json=body)

    def checkpoint(self, run_id: str, lease_token: str, checkpoint: str) -> Call[m.RunOut]:
        body = {"lease_token": lease_token, "checkpoint": checkpoint}
        return Call("POST", f"/v1/runs/{run_id}/checkpoint", json=body, model=m.RunOut)

    def complete(
        self, run_id: str, lease_token: str, artifact_uri: str, *, config_hash: str | None = None
    ) -> Call[m.RunOut]:
        """``config_hash``: the ``config_hash()`` it was trained with (409 unless the run's)."""
        body = {"lease_token": lease_token, "artifact_uri": artifact_uri}
        if config_hash is not None:
            body["config_hash"] = config_hash
        return Call("POST", f"/v1/runs/{run_id}/complete", json=body, model=m.RunOut)

    def fail(self, run_id: str, lease_token: str, error: str) -> Call[m.RunOut]:
        body = {"lease_token": lease_token, "error": error}
        return Call("POST", f"/v1/runs/{run_id}/fail", json=body, model=m.RunOut)


class Datasets:
    def create(
        self,
        name: str,
        kind: str,
        filter: Mapping[str, Any] | None = None,
        mix: Mapping[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
        wait: bool = True,
        timeout: float = 3600,
        raw: bool = False,
    ) -> Procedure[m.DatasetVersionOut]:
        """Freeze the labels ``filter`` selects (plus ``mix``) into a new version of
        ``name``; with ``wait``, the version once ``ready`` (:class:`FreezeFailed` if
        it failed), else at once, ``freezing``."""
        body: dict[str, Any] = {"name": name, "kind": kind, "filter": dict(filter or {})}
        if mix is not None:
            body["mix"] = dict(mix)
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        call: Call[Any] = Call(
            "POST", "/v1/datasets", json=body, headers=headers, model=m.DatasetVersionOut
        )
        version = yield call.raw() if raw else call
        if not wait:
            return version
        return (yield from self.wait(value(version, "ref"), timeout=timeout, raw=raw))

    def wait(
        self, ref: str, *, timeout: float = 3600, poll: float = 1.0, raw: bool = False
    ) -> Procedure[m.DatasetVersionOut]:
        """The version once no longer ``freezing``; polls fast at first (small
        versions freeze in well under a second), then every ``poll`` seconds."""
        fetch = (lambda: self.get(ref).raw()) if raw else (lambda: self.get(ref))
        done = lambda v: value(v, "state") != "freezing"  # noqa: E731
        version = yield from poll_(fetch, done, timeout=timeout, interval=poll, first=0.02)
        if value(version, "state") == "failed":
            raise FreezeFailed(f"{ref}: {value(version, 'error')}")
        if value(version, "state") == "freezing":
            raise TimeoutError(
                f"{ref} is still freezing after {timeout:.0f} s ({value(version, 'rows_done')} "
                f"of {value(version, 'rows_total')} rows)"
            )
        return version

    def get(self, ref: str) -> Call[m.DatasetVersionOut]:
        """``name`` (the latest version) or ``name@version``."""
        return Call("GET", f"/v1/datasets/{ref}", model=m.DatasetVersionOut)

    def list(self, *, limit: int | None = None) -> Call[m.DatasetVersionOut]:
        """Every dataset of the project, latest version each."""
        return Call(
            "GET", "/v1/datasets", params={"limit": limit}, model=m.DatasetVersionOut, paged=True
        )

    def versions(self, name: str) -> Call[builtins.list[m.DatasetVersionOut]]:
        return Call(
            "GET", f"/v1/datasets/{name}/versions", model=builtins.list[m.DatasetVersionOut]
        )

    def upload(
        self,
        name: str,
        path: Path | str,
        kind: str | None = None,
        *,
        format: str | None = None,
        progress: ProgressCallback | None = None,
    ) -> Call[m.DatasetVersionOut]:
        """Rows in TRL shape (JSONL, CSV, Parquet or a ``datasets`` directory) as a new
        version of ``name`` (``kind`` for a new dataset)."""
        source = detect(path, format)
        return Call(
            "POST", f"/v1/datasets/{name}/upload", params={"kind": kind},
            content=source.body(progress), headers={"Content-Type": "application/x-ndjson"},
            model=m.DatasetVersionOut,
        )  # fmt: skip

    def export(
        self,
        ref: str,
        dest: Path | str,
        format: str = "jsonl",
        *,
        verify: bool = True,
        retries: int = 5,
        resume: bool = False,
        progress: ProgressCallback | None = None,
    ) -> Export:
        """Stream a version to ``dest``; the answer is ``{ref, path, format, rows,
        checksum, retries}`` (see :class:`~charter.sdk.export.Export`)."""
        return Export(
            ref, dest, format, verify=verify, retries=retries, resume=resume, progress=progress
        )


class Keys:
    def create(
        self, scopes: builtins.list[str], name: str = "", *, expires_in_days: int | None = None
    ) -> Call[m.KeyCreated]:
        """A key in the caller's project; its secret is in this answer only."""
        body = {"scopes": scopes, "name": name, "expires_in_days": expires_in_days}
        return Call("POST", "/v1/keys", json=_body(body, {}), model=m.KeyCreated)

    def list(self) -> Call[builtins.list[m.KeyOut]]:
        return Call("GET", "/v1/keys", model=builtins.list[m.KeyOut])

    def revoke(self, key_id: str) -> Call[m.KeyOut]:
        return Call("POST", f"/v1/keys/{key_id}/revoke", model=m.KeyOut)


class Workers:
    def list(self) -> Call[builtins.list[m.WorkerOut]]:
        return Call("GET", "/v1/workers", model=builtins.list[m.WorkerOut])


class Stats:
    def overview(self, hours: int = 6) -> Call[m.Overview]:
        return Call("GET", "/v1/stats/overview", params={"hours": hours}, model=m.Overview)

    def job(self, job_id: str, chains: int = 5) -> Call[m.JobStats]:
        params = {"chains": chains}
        return Call("GET", f"/v1/stats/jobs/{job_id}", params=params, model=m.JobStats)

    def models(self) -> Call[builtins.list[m.ModelStats]]:
        return Call("GET", "/v1/stats/models", model=builtins.list[m.ModelStats])


class Webhooks:
    """Endpoints that receive signed events, and their deliveries (admin keys)."""

    def create(
        self, url: str, events: builtins.list[str], description: str = "", *, enabled: bool = True
    ) -> Call[m.EndpointWithSecret]:
        """The signing secret is in this answer only."""
        body = {"url": url, "events": events, "description": description, "enabled": enabled}
        return Call("POST", "/v1/webhooks", json=body, model=m.EndpointWithSecret)

    def list(self, *, limit: int | None = None) -> Call[m.EndpointOut]:
        return Call("GET", "/v1/webhooks", params={"limit": limit}, model=m.EndpointOut, paged=True)

    def get(self, webhook_id: str) -> Call[m.EndpointOut]:
        return Call("GET", f"/v1/webhooks/{webhook_id}", model=m.EndpointOut)

    def update(
        self,
        webhook_id: str,
        *,
        url: str | None = None,
        events: builtins.list[str] | None = None,
        description: str | None = None,
        enabled: bool | None = None,
    ) -> Call[m.EndpointOut]:
        """Change the given fields only."""
        body = _body({"url": url, "events": events, "description": description}, {})
        if enabled is not None:
            body["enabled"] = enabled
        return Call("PATCH", f"/v1/webhooks/{webhook_id}", json=body, model=m.EndpointOut)

    def delete(self, webhook_id: str) -> Call[None]:
        return Call("DELETE", f"/v1/webhooks/{webhook_id}")

    def rotate_secret(self, webhook_id: str) -> Call[m.EndpointWithSecret]:
        """A new secret (in this answer only); the old one stops signing at once."""
        path = f"/v1/webhooks/{webhook_id}/rotate-secret"
        return Call("POST", path, model=m.EndpointWithSecret)

    def deliveries(
        self, webhook_id: str, status: str | None = None, *, limit: int | None = None
    ) -> Call[m.DeliveryOut]:
        return Call(
            "GET", f"/v1/webhooks/{webhook_id}/deliveries",
            params={"status": status, "limit": limit}, model=m.DeliveryOut, paged=True,
        )  # fmt: skip

    def resend(self, delivery_id: str) -> Call[m.DeliveryOut]:
        """A new attempt cycle: the delivery is pending again and due now."""
        path = f"/v1/webhooks/deliveries/{delivery_id}/resend"
        return Call("POST", path, model=m.DeliveryOut)

    def test(self, webhook_id: str) -> Call[m.DeliveryOut]:
        """Queue a ``webhook.test`` ping to this endpoint only."""
        return Call("POST", f"/v1/webhooks/{webhook_id}/test", model=m.DeliveryOut)


class Audit:
    def list(
        self,
        *,
        route: str | None = None,
        key_prefix: str | None = None,
        outcome: str | None = None,
        object_id: str | None = None,
        since: str | None = None,
        until: str | None = None,
        limit: int | None = None,
    ) -> Call[m.AuditEventOut]:
        """The project's state-changing calls, newest first (``since`` inclusive,
        ``until`` exclusive: ISO-8601, UTC without an offset)."""
        params = {
            "route": route, "key_prefix": key_prefix, "outcome": outcome,
            "object_id": object_id, "since": since, "until": until, "limit": limit,
        }  # fmt: skip
        return Call("GET", "/v1/audit", params=params, model=m.AuditEventOut, paged=True)


class Reviews:
    """Human review of AI labels: queues, verdicts, agreement, export and import."""

    def open_queue(
        self,
        job_id: str,
        size: int,
        *,
        strategy: str | None = None,
        by: str | None = None,
        seed: int | None = None,
    ) -> Call[m.QueueOut]:
        """A seeded sample of the job's labels to review (``strategy``: random or
        stratified ``by`` principle, confidence or swap_disagreement)."""
        body = _body({"size": size}, {"strategy": strategy, "by": by, "seed": seed})
        path = f"/v1/jobs/{job_id}/reviews/queues"
        return Call("POST", path, json=body, model=m.QueueOut)

    def queue(self, queue_id: str) -> Call[m.QueueOut]:
        return Call("GET", f"/v1/reviews/queues/{queue_id}", model=m.QueueOut)

    def items(self, queue_id: str, reviewer: str = "", *, limit: int | None = None) -> Call[Any]:
        """The queue's items: what was labelled, the AI label, and the caller's verdict."""
        return Call(
            "GET", f"/v1/reviews/queues/{queue_id}/items",
            params={"reviewer": reviewer or None, "limit": limit}, model=ReviewItem, paged=True,
        )  # fmt: skip

    def verdict(
        self,
        queue_id: str,
        label_id: int,
        *,
        choice: str | None = None,
        satisfies: bool | None = None,
        note: str | None = None,
        reviewer: str | None = None,
    ) -> Call[m.VerdictOut]:
        """Give (or replace) the caller's verdict: ``choice`` (A, B, tie) on a
        comparison, ``satisfies`` on a revision."""
        body = _body(
            {}, {"choice": choice, "satisfies": satisfies, "note": note, "reviewer": reviewer}
        )
        path = f"/v1/reviews/queues/{queue_id}/items/{label_id}/verdicts"
        return Call("POST", path, json=body, model=m.VerdictOut)

    def agreement(
        self, job_id: str | None = None, *, model: str | None = None
    ) -> Call[m.AgreementOut]:
        """AI-human agreement on one job's labels, or the project's (of one model)."""
        if job_id is not None:
            return Call("GET", f"/v1/jobs/{job_id}/reviews/agreement", model=m.AgreementOut)
        return Call("GET", "/v1/reviews/agreement", params={"model": model}, model=m.AgreementOut)

    def export(self, job_id: str) -> Call[str]:
        """The job's verdicts as JSONL text, one line per verdict."""
        return Call("GET", f"/v1/jobs/{job_id}/reviews/export", text=True)

    def import_(self, job_id: str, source: Path | str | bytes) -> Call[m.ImportOut]:
        """Verdicts in the export's JSONL (a path or its bytes): all lines or none."""
        content = source if isinstance(source, bytes) else Path(source).read_bytes()
        return Call(
            "POST", f"/v1/jobs/{job_id}/reviews/import", content=content,
            headers={"Content-Type": "application/x-ndjson"}, model=m.ImportOut,
        )  # fmt: skip


class Templates:
    """Feedback templates: the shipped ones and the project's own versions."""

    def push(self, spec: Body = None, /, **fields: Any) -> Call[m.TemplateOut]:
        """A :class:`~charter.sdk.models.TemplateCreate` (or its fields: ``name``,
        ``question``, ...); identical content answers the existing version."""
        return Call("POST", "/v1/templates", json=_body(spec, fields), model=m.TemplateOut)

    def list(self) -> Call[builtins.list[m.TemplateOut]]:
        return Call("GET", "/v1/templates", model=builtins.list[m.TemplateOut])

    def get(self, ref: str) -> Call[m.TemplateOut]:
        """A shipped template's name, or ``name@version`` of the project's."""
        return Call("GET", f"/v1/templates/{ref}", model=m.TemplateOut)

    def render(self, ref: str, spec: Body = None, /, **fields: Any) -> Call[m.RenderOut]:
        """The exact prompt a comparison would get (``conversation``, ``principle``,
        ``response_a``, ``response_b``, ``chain_of_thought``)."""
        body = _body(spec, fields)
        return Call("POST", f"/v1/templates/{ref}/render", json=body, model=m.RenderOut)


class CritiqueTemplates:
    """Critique templates: how SL-CAI asks for critiques and revisions."""

    def push(self, spec: Body = None, /, **fields: Any) -> Call[m.TemplateOut]:
        """A :class:`~charter.sdk.models.CritiqueTemplateCreate` (or its fields: ``name``,
        ``critique``, ``revision``, ...); identical content answers the existing version."""
        body = _body(spec, fields)
        return Call("POST", "/v1/critique-templates", json=body, model=m.TemplateOut)

    def list(self) -> Call[builtins.list[m.TemplateOut]]:
        return Call("GET", "/v1/critique-templates", model=builtins.list[m.TemplateOut])

    def get(self, ref: str) -> Call[m.TemplateOut]:
        return Call("GET", f"/v1/critique-templates/{ref}", model=m.TemplateOut)

    def render(self, ref: str, spec: Body = None, /, **fields: Any) -> Call[m.CritiqueRenderOut]:
        """The conversations of one SL-CAI round (``conversation``, ``response``,
        ``critique_request``, ``revision_request``, ``critique``)."""
        body = _body(spec, fields)
        return Call(
            "POST", f"/v1/critique-templates/{ref}/render", json=body, model=m.CritiqueRenderOut
        )


class GoldSets:
    """Comparisons with a known answer, for judge evaluation; versioned by content."""

    def push(self, name: str, source: Path | str | bytes) -> Call[m.GoldSetOut]:
        """JSONL (a path or its bytes): one ``{prompt|messages, response_a, response_b,
        answer[, p_gold][, category]}`` per line; the same rows as the latest version
        answer that version (``created`` false)."""
        content = source if isinstance(source, bytes) else Path(source).read_bytes()
        return Call(
            "POST", f"/v1/gold-sets/{name}", content=content,
            headers={"Content-Type": "application/x-ndjson"}, model=m.GoldSetOut,
        )  # fmt: skip

    def list(self) -> Call[builtins.list[m.GoldSetOut]]:
        return Call("GET", "/v1/gold-sets", model=builtins.list[m.GoldSetOut])

    def get(self, ref: str) -> Call[m.GoldSetOut]:
        """``name`` (the latest version) or ``name@version``."""
        return Call("GET", f"/v1/gold-sets/{ref}", model=m.GoldSetOut)

    def items(self, ref: str, *, limit: int | None = None) -> Call[m.GoldItemOut]:
        """Its rows with their answers, in order."""
        return Call(
            "GET", f"/v1/gold-sets/{ref}/items", params={"limit": limit},
            model=m.GoldItemOut, paged=True,
        )  # fmt: skip


class PublicInputs:
    """Statements and votes for a collective constitution; versioned by content."""

    def push(self, name: str, spec: Body = None, /, **fields: Any) -> Call[m.PublicInputOut]:
        """A :class:`~charter.sdk.models.JsonUpload`, ``CsvUpload`` or ``PolisUpload``
        (or its fields, ``format`` first); the same input as the latest version answers
        that version (``created`` false)."""
        return Call(
            "POST", f"/v1/public-inputs/{name}", json=_body(spec, fields), model=m.PublicInputOut
        )

    def list(self) -> Call[builtins.list[m.PublicInputOut]]:
        return Call("GET", "/v1/public-inputs", model=builtins.list[m.PublicInputOut])

    def get(self, ref: str) -> Call[m.PublicInputOut]:
        """``name`` (the latest version) or ``name@version``."""
        return Call("GET", f"/v1/public-inputs/{ref}", model=m.PublicInputOut)

    def analysis(self, ref: str, **params: Any) -> Call[m.AnalysisOut]:
        """Opinion groups and each statement's consensus; ``params`` as the query
        (``min_votes``, ``max_groups``, ``seed``, ``min_group_agreement``,
        ``divisive_threshold``, ``participants``)."""
        query = {k: v for k, v in params.items() if v is not None}
        return Call("GET", f"/v1/public-inputs/{ref}/analysis", params=query, model=m.AnalysisOut)

    def draft(self, ref: str, spec: Body = None, /, **fields: Any) -> Call[m.DraftPreview]:
        """The constitution :meth:`publish` would make with these fields, to review and
        edit (``wording``); nothing is stored."""
        return Call(
            "POST", f"/v1/public-inputs/{ref}/draft", json=_body(spec, fields),
            model=m.DraftPreview,
        )  # fmt: skip

    def wording_job(self, ref: str, constitution: str, model: str | None = None) -> Call[m.JobOut]:
        """A ``generate`` job in which ``model`` words the statements of ``constitution``
        (drafted from ``ref``); pass its id as ``wording_job`` once it has finished."""
        body = _body(None, {"constitution": constitution, "model": model})
        return Call("POST", f"/v1/public-inputs/{ref}/wording-jobs", json=body, model=m.JobOut)

    def publish(self, ref: str, spec: Body = None, /, **fields: Any) -> Call[m.DraftOut]:
        """A constitution version drafted from the statements every group agreed on
        (a :class:`~charter.sdk.models.DraftRequest` or its fields: ``name`` first)."""
        return Call(
            "POST", f"/v1/public-inputs/{ref}/constitution", json=_body(spec, fields),
            model=m.DraftOut,
        )  # fmt: skip


class Classifiers:
    """Constitutional classifiers: synthetic data from a constitution's categories, and
    scoring with a trained classifier (a ``classifier`` run)."""

    def requests_job(self, spec: Body = None, /, **fields: Any) -> Call[m.JobOut]:
        """A :class:`~charter.sdk.models.RequestsJobCreate` (or its fields:
        ``constitution``, ``model``, ``per_category``, ``seed``)."""
        body = _body(spec, fields)
        return Call("POST", "/v1/classifier-data/requests", json=body, model=m.JobOut)

    def responses_job(self, requests_job: str, **fields: Any) -> Call[m.JobOut]:
        """Paraphrases, answers and refusals of a finished requests job's requests."""
        body = _body(None, {"requests_job": requests_job, **fields})
        return Call("POST", "/v1/classifier-data/responses", json=body, model=m.JobOut)

    def dataset(self, name: str, responses_job: str) -> Call[m.DatasetVersionOut]:
        """The two jobs' rows as a new version of the classifier dataset ``name``."""
        body = {"name": name, "responses_job": responses_job}
        return Call("POST", "/v1/classifier-data/datasets", json=body, model=m.DatasetVersionOut)

    def classify(self, classifier: str, **fields: Any) -> Call[m.ClassifyOut]:
        """Scores of ``prompt`` and/or ``response`` (as the classifier's target reads)."""
        body = _body(None, {"classifier": classifier, **fields})
        return Call("POST", "/v1/classify", json=body, model=m.ClassifyOut)

    def stream(
        self,
        classifier: str,
        tokens: Iterable[str],
        *,
        prompt: str | None = None,
        threshold: float | None = None,
    ) -> Call[str]:
        """Guard a response token by token: the answer's JSON lines (one per token read,
        then the last, ``done``), ending at the first flagged prefix. ``tokens`` is read
        as the request is sent, so a generator stops being read where the guard stopped."""
        header = _body(None, {"classifier": classifier, "prompt": prompt, "threshold": threshold})

        def lines() -> Iterable[bytes]:
            yield (json.dumps(header) + "\n").encode()
            for token in tokens:
                yield (json.dumps({"token": token}) + "\n").encode()

        return Call(
            "POST", "/v1/classify/stream", content=lines,
            headers={"Content-Type": "application/x-ndjson"}, text=True,
        )  # fmt: skip


class Evals:
    """Judge evaluations: a gold set scored by judge configurations on the workers."""

    def create(
        self, spec: Body = None, /, *, idempotency_key: str | None = None, **fields: Any
    ) -> Call[m.EvalOut]:
        """An :class:`~charter.sdk.models.EvalCreate` (or its fields: ``gold_set``,
        ``configs``, ``injection``, ``name``, ``seed``)."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return Call("POST", "/v1/evals", json=_body(spec, fields), headers=headers, model=m.EvalOut)

    def list(self, *, limit: int | None = None) -> Call[m.EvalOut]:
        return Call("GET", "/v1/evals", params={"limit": limit}, model=m.EvalOut, paged=True)

    def get(self, eval_id: str) -> Call[m.EvalOut]:
        return Call("GET", f"/v1/evals/{eval_id}", model=m.EvalOut)

    def report(self, eval_id: str) -> Call[m.EvalReportOut]:
        """Every number, from the labels stored so far (``complete`` says if all are in)."""
        return Call("GET", f"/v1/evals/{eval_id}/report", model=m.EvalReportOut)

    def cancel(self, eval_id: str) -> Call[m.EvalOut]:
        return Call("POST", f"/v1/evals/{eval_id}/cancel", model=m.EvalOut)

    def attacks(self) -> Call[builtins.list[m.AttackOut]]:
        """The injection suite an evaluation can add."""
        return Call("GET", "/v1/evals/attacks", model=builtins.list[m.AttackOut])

    def wait(
        self,
        eval_id: str,
        *,
        timeout: float = 3600,
        poll: float = 1.0,
        on_update: Callable[[Any], None] | None = None,
        raw: bool = False,
    ) -> Procedure[m.EvalOut]:
        """The evaluation once every job is completed or cancelled, or after ``timeout``."""
        return _until_status(
            self.get, eval_id, FINAL_JOB_STATUSES, timeout=timeout, interval=poll,
            on_update=on_update, raw=raw,
        )  # fmt: skip


POLICY_EVAL_FINAL = frozenset({"completed", "cancelled", "failed"})


class PolicyEvals:
    """Policies rated by Elo: each answers a batch, judges compare every pair of answers."""

    def create(
        self, spec: Body = None, /, *, idempotency_key: str | None = None, **fields: Any
    ) -> Call[m.PolicyEvalOut]:
        """A :class:`~charter.sdk.models.PolicyEvalCreate` (or its fields: ``batch_id``,
        ``policies``, ``judges``, ``anchor``, ``plot``, ``bootstrap``, ``name``, ``seed``)."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return Call(
            "POST", "/v1/policy-evals", json=_body(spec, fields), headers=headers,
            model=m.PolicyEvalOut,
        )  # fmt: skip

    def list(self, *, limit: int | None = None) -> Call[m.PolicyEvalOut]:
        return Call(
            "GET", "/v1/policy-evals", params={"limit": limit}, model=m.PolicyEvalOut, paged=True
        )

    def get(self, eval_id: str) -> Call[m.PolicyEvalOut]:
        return Call("GET", f"/v1/policy-evals/{eval_id}", model=m.PolicyEvalOut)

    def report(self, eval_id: str) -> Call[m.PolicyEvalReportOut]:
        """Elo per judge with intervals, from the labels stored so far."""
        return Call("GET", f"/v1/policy-evals/{eval_id}/report", model=m.PolicyEvalReportOut)

    def plot(self, eval_id: str) -> Call[bytes]:
        """The plot (one judge's Elo against another's) as PNG bytes."""
        return Call("GET", f"/v1/policy-evals/{eval_id}/plot.png", binary=True)

    def cancel(self, eval_id: str) -> Call[m.PolicyEvalOut]:
        return Call("POST", f"/v1/policy-evals/{eval_id}/cancel", model=m.PolicyEvalOut)

    def wait(
        self,
        eval_id: str,
        *,
        timeout: float = 3600,
        poll: float = 1.0,
        on_update: Callable[[Any], None] | None = None,
        raw: bool = False,
    ) -> Procedure[m.PolicyEvalOut]:
        """The evaluation once completed, cancelled or failed, or after ``timeout``."""
        return _until_status(
            self.get, eval_id, POLICY_EVAL_FINAL, timeout=timeout, interval=poll,
            on_update=on_update, raw=raw,
        )  # fmt: skip


PIPELINE_FINAL = frozenset({"completed", "failed", "cancelled"})


class Pipelines:
    """The whole recipe as one object: SL-CAI, SFT, RL-CAI, PM, the policy runs and an
    Elo evaluation, advanced stage by stage by the gateway (docs/PIPELINES.md)."""

    def create(
        self, spec: Body = None, /, *, idempotency_key: str | None = None, **fields: Any
    ) -> Call[m.PipelineOut]:
        """A :class:`~charter.sdk.models.PipelineCreate` (or its fields: ``base_model``,
        ``constitution``, ``prompts``, ``rl_prompts``, ``eval_prompts``, ``name``,
        ``seed``, and one section per stage: ``sl_cai``, ``sft``, ``pm``, ``ppo``, ...)."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return Call(
            "POST", "/v1/pipelines", json=_body(spec, fields), headers=headers,
            model=m.PipelineOut,
        )  # fmt: skip

    def list(self, *, limit: int | None = None) -> Call[m.PipelineOut]:
        return Call(
            "GET", "/v1/pipelines", params={"limit": limit}, model=m.PipelineOut, paged=True
        )

    def get(self, pipeline_id: str) -> Call[m.PipelineOut]:
        """Its state and each stage's current attempt."""
        return Call("GET", f"/v1/pipelines/{pipeline_id}", model=m.PipelineOut)

    def stages(self, pipeline_id: str) -> Call[builtins.list[m.StageOut]]:
        """Every attempt of every stage, oldest first, with the inputs each read."""
        return Call("GET", f"/v1/pipelines/{pipeline_id}/stages", model=builtins.list[m.StageOut])

    def cancel(self, pipeline_id: str) -> Call[m.PipelineOut]:
        """Cancel the stages in flight; what finished stays."""
        return Call("POST", f"/v1/pipelines/{pipeline_id}/cancel", model=m.PipelineOut)

    def resume(self, pipeline_id: str) -> Call[m.PipelineOut]:
        """A failed or cancelled pipeline goes on (a failed run from its checkpoint)."""
        return Call("POST", f"/v1/pipelines/{pipeline_id}/resume", model=m.PipelineOut)

    def rerun(self, pipeline_id: str, stage: str) -> Call[m.PipelineOut]:
        """Run ``stage`` and every stage downstream of it again."""
        return Call(
            "POST", f"/v1/pipelines/{pipeline_id}/rerun", json={"stage": stage},
            model=m.PipelineOut,
        )  # fmt: skip

    def wait(
        self,
        pipeline_id: str,
        *,
        timeout: float = 24 * 3600,
        poll: float = 5.0,
        on_update: Callable[[Any], None] | None = None,
        raw: bool = False,
    ) -> Procedure[m.PipelineOut]:
        """The pipeline once completed, failed or cancelled, or after ``timeout``."""
        return _until_status(
            self.get, pipeline_id, PIPELINE_FINAL, timeout=timeout, interval=poll,
            on_update=on_update, raw=raw, field="state",
        )  # fmt: skip


# The groups a client binds, by attribute name.
RESOURCES: dict[str, type] = {
    "health": Health,
    "constitutions": Constitutions,
    "batches": Batches,
    "jobs": Jobs,
    "runs": Runs,
    "datasets": Datasets,
    "keys": Keys,
    "workers": Workers,
    "stats": Stats,
    "webhooks": Webhooks,
    "audit": Audit,
    "reviews": Reviews,
    "templates": Templates,
    "critique_templates": CritiqueTemplates,
    "gold_sets": GoldSets,
    "evals": Evals,
    "policy_evals": PolicyEvals,
    "pipelines": Pipelines,
    "public_inputs": PublicInputs,
    "classifiers": Classifiers,
}
