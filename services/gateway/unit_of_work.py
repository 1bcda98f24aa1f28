"""One unit of work per request: authenticate, authorise, run, commit once, then publish.

Every ``/v1`` route uses :class:`UnitOfWorkRoute`. It admits at most as many
requests at once as the database pool has connections (:class:`Admission`), opens
the session the endpoint's dependencies receive, authenticates the key, counts the request
against the key's rate limit and checks the scope the route requires (before
anything else, so no replay or parse ever answers a key that may not call the
route), parses a JSON body strictly and off the event loop
(:mod:`charter.core.documents`: no NaN, no duplicate keys, no lone surrogates,
bounded depth and sizes), replays or records ``Idempotency-Key`` responses in
the same transaction as the endpoint's writes (so a retry can never observe half
a request), adds the call's audit event to that transaction too (a refusal's or a
failure's is written after the rollback: :mod:`services.gateway.audit.service`),
commits once, and only then runs the after-commit hooks (publishing to the
broker). Services only flush.
"""

from __future__ import annotations

import asyncio
import email.message
import functools
import hashlib
import inspect
import logging
import weakref
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import psycopg
from fastapi import Request, Response
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import QueryParams

from charter import idempotency
from charter.core.documents import DocumentError, load_json
from charter.db.models import ApiKey
from charter.db.session import committed, transaction_id
from charter.errors import CharterError, Conflict, Invalid, RateLimited, Unavailable
from services.gateway.audit import service as audit
from services.gateway.auth import authenticate
from services.gateway.deps import check_scope
from services.gateway.errors import database_unavailable, error_response

log = logging.getLogger(__name__)

MAX_IDEMPOTENCY_KEY = 255
_Endpoint = TypeVar("_Endpoint", bound=Callable[..., Any])


def after_commit(request: Request, hook: Callable[[], None]) -> None:
    """Run ``hook`` once the request's transaction has committed.

    The request has succeeded by then, so a hook that raises is logged and never
    changes its answer: what the hook starts must also be started by something that
    reads the database later (the sweeper publishes unpublished chunks; a gateway's
    freezer looks when it starts and when a version that nobody is freezing is read).
    """
    request.state.after_commit.append(hook)


def _run_after_commit(request: Request) -> None:
    for hook in request.state.after_commit:
        try:
            hook()
        except Exception:  # committed: the client gets its success; a later pass repairs
            log.exception("after-commit hook %r of %s failed", hook, request.url.path)


def mark_secret(request: Request, *fields: str) -> None:
    """The response carries secrets in these top-level fields: an idempotency record
    stores them redacted, and a retry is answered 409 instead of a replay."""
    request.state.secret_fields = (*request.state.secret_fields, *fields)


def streams_body(endpoint: _Endpoint) -> _Endpoint:
    """Mark an endpoint that reads ``request.stream()`` itself: the route does not read
    the body into memory first, unless an ``Idempotency-Key`` needs the body's hash."""
    endpoint.streams_body = True  # type: ignore[attr-defined]
    return endpoint


def changes_nothing(endpoint: _Endpoint) -> _Endpoint:
    """Mark a POST that changes nothing (a classifier's score): it writes no audit row,
    since a deployment's filter calls it for every request it serves, and its
    Idempotency-Key is ignored (a retry simply answers again)."""
    endpoint.changes_nothing = True  # type: ignore[attr-defined]
    return endpoint


def _required_scope(dependant: Dependant) -> str | None:
    """The scope checked by the route's ``require(scope)`` dependency, if any."""
    for dependency in dependant.dependencies:
        scope = getattr(dependency.call, "required_scope", None) or _required_scope(dependency)
        if scope:
            return str(scope)
    return None


def _is_json(content_type: str | None) -> bool:
    """Whether FastAPI would read this body as JSON (its own rule: no type, or */json, */*+json)."""
    if not content_type:
        return True
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )


def _fingerprint(request: Request, body: bytes) -> str:
    digest = hashlib.sha256()
    for part in (request.method, request.url.path, str(request.url.query)):
        digest.update(part.encode() + b"\0")
    digest.update(request.headers.get("content-type", "").encode() + b"\0")
    digest.update(body)
    return digest.hexdigest()


def _replay(session: Session, api_key_id: str, key: str, fingerprint: str) -> Response | None:
    record = idempotency.find(session, api_key_id, key)
    if record is None:
        return None
    if record.request_hash != fingerprint:
        raise Invalid(
            "Idempotency-Key was already used with a different request", field="Idempotency-Key"
        )
    if record.redacted:
        raise Conflict(
            "the request with this Idempotency-Key already succeeded, and its response held a "
            "secret that is shown only once; it is not replayed "
            f"(first response: {record.response_body})",
            field="Idempotency-Key",
        )
    return Response(
        record.response_body,
        status_code=record.status_code,
        media_type="application/json",
        headers={"Idempotent-Replayed": "true"},
    )


def _page_limit(request: Request, route: APIRoute) -> None:
    """Enforce ``page_limit_max`` on every ``limit`` query parameter: larger values
    are refused, and a route default above it is lowered to it."""
    field = next((f for f in route.dependant.query_params if f.name == "limit"), None)
    if field is None:
        return
    maximum = request.app.state.settings.page_limit_max
    raw = request.query_params.get("limit")
    if raw is None:
        if isinstance(field.default, int) and field.default > maximum:
            query = request.scope["query_string"].decode("latin-1")
            request.scope["query_string"] = f"{query}&limit={maximum}".lstrip("&").encode()
            # Starlette caches the parsed query; FastAPI reads that cache.
            request._query_params = QueryParams(request.scope["query_string"])
        return
    if raw.strip().isascii() and raw.strip().isdigit() and int(raw) > maximum:
        raise Invalid(f"limit must be at most {maximum}", field="limit")


class Admission:
    """At most ``slots`` units of work at once; the others wait on the event loop.

    A request holds its pooled connection from its first query to its commit, across
    several threadpool calls. Without a bound, more requests than connections leave
    threadpool threads blocked on the pool while the requests that hold connections
    wait for a thread: everything stalls until the pool's 30 s timeout. ``slots`` is
    the pool's size, so a thread never waits for a connection (``None``: no bound).
    A request that waits longer than ``wait_seconds`` for a slot (the database is
    saturated, or stuck) is answered 503 with ``Retry-After`` instead of hanging.
    One semaphore per event loop, since tests drive one app from several loops.
    """

    def __init__(self, slots: int | None, wait_seconds: float = 10.0) -> None:
        self.slots = slots
        self.wait_seconds = wait_seconds
        self._by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
            weakref.WeakKeyDictionary()
        )

    @asynccontextmanager
    async def __call__(self) -> AsyncIterator[None]:
        if self.slots is None:
            yield
            return
        loop = asyncio.get_running_loop()
        semaphore = self._by_loop.get(loop)
        if semaphore is None:
            semaphore = self._by_loop[loop] = asyncio.Semaphore(self.slots)
        try:
            await asyncio.wait_for(semaphore.acquire(), self.wait_seconds)
        except TimeoutError:
            raise Unavailable(
                f"the database is saturated: no connection freed up in {self.wait_seconds:g} s; "
                "retry later"
            ) from None
        try:
            yield
        finally:
            semaphore.release()


def _run_in_one_hop(dependant: Dependant) -> None:
    """Run a plain ``def`` endpoint in the threadpool ourselves, as a coroutine to FastAPI.

    FastAPI runs a sync endpoint in the threadpool and then, in a second hop, validates
    its return value there too; a coroutine's it validates on the event loop, where
    checking the model instance an endpoint returns costs microseconds. One hop instead
    of two (each is milliseconds of GIL hand-off on a busy host). Generators (streamed
    bodies) keep FastAPI's own handling."""
    call = dependant.call
    if call is None or inspect.iscoroutinefunction(call) or inspect.isgeneratorfunction(call):
        return
    if inspect.isasyncgenfunction(call) or getattr(call, "runs_in_one_hop", False):
        return

    @functools.wraps(call)
    async def in_threadpool(**values: Any) -> Any:
        return await run_in_threadpool(call, **values)

    in_threadpool.runs_in_one_hop = True  # type: ignore[attr-defined]
    dependant.call = in_threadpool


class UnitOfWorkRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        _run_in_one_hop(self.dependant)
        endpoint = super().get_route_handler()
        self.required_scope = _required_scope(self.dependant)

        async def handle(request: Request) -> Response:
            try:
                async with request.app.state.admission():
                    return await self._unit_of_work(request, endpoint)
            except Unavailable as exc:  # not admitted: nothing ran
                return error_response(exc)

        return handle

    async def _unit_of_work(
        self, request: Request, endpoint: Callable[[Request], Coroutine[Any, Any, Response]]
    ) -> Response:
        session: Session = request.app.state.sessions()
        request.state.session = session
        request.state.after_commit = []
        request.state.secret_fields = ()
        request.state.caller = None  # set once a key is authenticated: audited from then on
        try:
            return await self._handle(request, session, endpoint)
        except CharterError as exc:
            # 429s shed load: a row each would put it back on the database.
            failure = None if isinstance(exc, RateLimited) else audit.failure_of(exc)
            await run_in_threadpool(self._roll_back, request, session, failure)
            return error_response(exc)
        except (DBAPIError, PoolTimeout, psycopg.Error) as exc:
            unavailable = database_unavailable(exc)
            if unavailable is None:
                # A constraint, bad data or a bug: the app's handlers answer it.
                await run_in_threadpool(self._roll_back, request, session, audit.failure_of(exc))
                raise
            # No connection came free: another wait for one would only delay the 503.
            failure = None if isinstance(exc, PoolTimeout) else audit.failure_of(unavailable)
            await run_in_threadpool(self._roll_back, request, session, failure)
            return error_response(unavailable)
        except Exception as exc:  # a bad query or body (422), a bug (500): recorded, re-raised
            if audit.audited(request) is not None:
                await run_in_threadpool(self._roll_back, request, session, audit.failure_of(exc))
            raise
        finally:
            if session.in_transaction():  # it still holds a connection: releasing it is I/O
                await run_in_threadpool(session.close)
            else:
                session.close()

    # Each threadpool call is a GIL hand-off that costs milliseconds on a busy 2-core
    # host (bench/api_latency.py), so a request makes as few as it can: one to admit
    # it, one to replay or parse, the endpoint's, and one to commit and publish. The
    # audit event rides on these: a success's is added before the commit (no I/O until
    # it), a refusal's is written in the hop that rolls back.

    def _roll_back(self, request: Request, session: Session, failure: audit.Failure | None) -> None:
        """Roll the request back; then, if it is audited, write ``failure``'s event in a
        transaction of its own (best effort: the answer stands whatever happens)."""
        session.rollback()
        caller = audit.audited(request)
        if caller is not None and failure is not None:
            row = audit.event(request, self.path, caller, failure.status_code, failure=failure)
            audit.write_alone(session, row)

    def _audit_replay(self, request: Request, session: Session, replay: Response) -> None:
        """Record a replayed answer as such (its write is the first call's event)."""
        caller = (
            None if getattr(self.endpoint, "changes_nothing", False) else audit.audited(request)
        )
        if caller is not None:
            row = audit.event(request, self.path, caller, replay.status_code, replayed=True)
            audit.write_alone(session, row)

    def _admit(self, request: Request, session: Session) -> ApiKey:
        """Authenticate, count the request against its key's rate limit and check the
        route's scope (the limiter's store may be a network round trip: never on the
        event loop)."""
        state = request.app.state
        api_key = authenticate(
            session,
            request.headers,
            request.query_params,
            state.settings.secret_key,
            limiter=state.rate_limiter,
            client=request.client,
        )
        request.state.caller = audit.Caller.of(api_key)  # a scope refusal is audited too
        if self.required_scope:  # every request of a key counts, replays and bad bodies too
            state.rate_limiter.hit(api_key.id, self.required_scope)
            check_scope(api_key, self.required_scope)
        return api_key

    def _parses_json(self, request: Request, body: bytes) -> bool:
        content_type = request.headers.get("content-type")
        return self.body_field is not None and bool(body) and _is_json(content_type)

    def _replay_or_parse(
        self, request: Request, session: Session, key: str | None, fingerprint: str, body: bytes
    ) -> Response | None:
        """The recorded response of a retried ``Idempotency-Key``; else the body parsed
        with the strict loader, which FastAPI then reads from the cache (``Request.json``
        keeps ``_json``) instead of calling ``json.loads``."""
        if key is not None:
            replay = _replay(session, request.state.api_key.id, key, fingerprint)
            if replay is not None:
                self._audit_replay(request, session, replay)
                return replay
        if self._parses_json(request, body):
            try:
                request._json = load_json(body, request.app.state.settings.document_bounds)
            except DocumentError as exc:
                field = f"body.{exc.path}" if exc.path else "body"
                raise Invalid(f"{field}: {exc}", field=field) from exc
        return None

    def _commit(
        self, request: Request, session: Session, key: str | None, fingerprint: str
    ) -> Response | None:
        """Commit, run the after-commit hooks, close; a replay instead when a concurrent
        retry with the same ``Idempotency-Key`` committed first."""
        xid = None
        try:
            if request.method != "GET":  # flushes: a unique key's race surfaces here too
                xid = transaction_id(session)
            session.commit()
        except IntegrityError as exc:
            session.rollback()
            if key is not None:
                replay = _replay(session, request.state.api_key.id, key, fingerprint)
                if replay is not None:  # the event added with the writes rolled back too
                    self._audit_replay(request, session, replay)
                    return replay
            raise Conflict("a concurrent request changed the same object; retry") from exc
        except DBAPIError as exc:
            # The connection died during COMMIT: committed or not, only the server knows.
            # Answering 503 to a commit that happened would invite a duplicate.
            if xid is None or database_unavailable(exc) is None:
                raise
            if committed(request.app.state.engine, xid) is not True:
                raise
            log.warning(
                "%s: the connection died during COMMIT, which went through", request.url.path
            )
        _run_after_commit(request)
        session.close()
        return None

    def _admit_and_read(
        self, request: Request, session: Session, key: str | None, body: bytes
    ) -> tuple[str, Response | None]:
        """The request's first hop off the event loop: admit it (authenticate, count, check
        the scope), then check its ``Idempotency-Key`` and replay or parse its body, in
        that order, so no replay or parse ever answers a key that may not call the route.
        Returns the body's fingerprint and the replay, if any."""
        api_key = request.state.api_key = self._admit(request, session)
        request.state.caller = audit.Caller.of(api_key)  # audited from here on
        _page_limit(request, self)
        fingerprint = ""
        if key is not None:
            if not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY:
                raise Invalid("Idempotency-Key must be 1-255 characters", field="Idempotency-Key")
            fingerprint = _fingerprint(request, body)
        if key is not None or self._parses_json(request, body):
            return fingerprint, self._replay_or_parse(request, session, key, fingerprint, body)
        return fingerprint, None

    async def _handle(
        self,
        request: Request,
        session: Session,
        endpoint: Callable[[Request], Coroutine[Any, Any, Response]],
    ) -> Response:
        settings = request.app.state.settings
        # A POST that changes nothing has nothing a retry could do twice: its
        # Idempotency-Key is ignored, and its answer (maybe a stream) is never stored.
        changes_nothing = getattr(self.endpoint, "changes_nothing", False)
        posts = request.method == "POST" and not changes_nothing
        key = request.headers.get("idempotency-key") if posts else None
        streams = key is None and getattr(self.endpoint, "streams_body", False)
        # Read before the key is checked (BodySizeLimit bounds it), so that admitting,
        # replaying and parsing take one hop to the threadpool, not two.
        body = b"" if streams else await request.body()
        fingerprint, replay = await run_in_threadpool(
            self._admit_and_read, request, session, key, body
        )
        if replay is not None:
            return replay
        api_key = request.state.api_key
        response = await endpoint(request)
        if response.status_code >= 400:
            failure = audit.failure_of_response(response)
            await run_in_threadpool(self._roll_back, request, session, failure)
            return response
        if key is not None:
            idempotency.record(
                session,
                project_id=api_key.project_id,
                api_key_id=api_key.id,
                key=key,
                request_hash=fingerprint,
                status_code=response.status_code,
                body=bytes(response.body),
                secret_fields=request.state.secret_fields,
                ttl_seconds=settings.idempotency_ttl_seconds,
            )
        caller = (
            None if getattr(self.endpoint, "changes_nothing", False) else audit.audited(request)
        )
        if caller is not None:  # commits or rolls back with the writes
            status_code = response.status_code
            session.add(audit.event(request, self.path, caller, status_code, response=response))
        replay = await run_in_threadpool(self._commit, request, session, key, fingerprint)
        return replay or response
