"""``charter classifier``: constitutional classifiers' synthetic data, scores, and the
server that loads them (docs/CLASSIFIERS.md)."""

from __future__ import annotations

from typing import Annotated

import typer

from charter.cli.output import JsonOption, UsageError, client, console, emit_json, errors
from charter.cli.progress import watch_jobs
from charter.client import CharterClient
from charter.settings import get_settings

app = typer.Typer(help="Constitutional classifiers.", no_args_is_help=True)


@app.command("data")
def data(
    name: Annotated[str, typer.Argument(help="The classifier dataset to make a version of.")],
    constitution: Annotated[
        str, typer.Option(help="A constitution with a classifier section (name[@version]).")
    ],
    model: Annotated[str, typer.Option(help="The model that writes the data.")] = "smollm2",
    per_category: Annotated[int, typer.Option(help="Requests written per category.")] = 50,
    seed: Annotated[
        int | None, typer.Option(help="Draws the examples shown; random if unset.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Write requests for every category, then their paraphrases, answers and refusals
    (two generate jobs, followed to the end), and freeze the rows as a version of NAME."""
    with client() as c:
        requests = c.classifiers.requests_job(
            constitution=constitution, model=model, per_category=per_category, seed=seed
        )
        _finished(c, requests.id, "requests")
        responses = c.classifiers.responses_job(requests.id, seed=seed)
        _finished(c, responses.id, "responses")
        version = c.classifiers.dataset(name, responses.id)
    if as_json:
        emit_json(version)
        return
    console.print(
        f"{version.ref}: {version.row_count} rows (requests job {requests.id}, responses job "
        f"{responses.id}); then: charter train classifier --dataset {version.ref} "
        '--config \'{"target": "input"}\''
    )


def _finished(c: CharterClient, job_id: str, what: str) -> None:
    [job] = watch_jobs(c, [job_id], console=errors)
    if job["status"] != "completed":
        raise UsageError(f"the {what} job {job_id} ended {job['status']}: nothing was frozen")


@app.command("classify")
def classify(
    classifier: Annotated[str, typer.Argument(help="A completed classifier run's id.")],
    prompt: Annotated[str | None, typer.Option(help="The user's message.")] = None,
    response: Annotated[str | None, typer.Option(help="The model's response.")] = None,
    threshold: Annotated[float | None, typer.Option(help="Flag at this score.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Score a prompt, a response or both with a classifier."""
    with client() as c:
        answer = c.classifiers.classify(
            classifier, prompt=prompt, response=response, threshold=threshold
        )
    if as_json:
        emit_json(answer)
        return
    verdict = f"FLAGGED ({answer.category})" if answer.flagged else "allowed"
    scores = ", ".join(f"{k} {v:.3f}" for k, v in sorted(answer.scores.items()))
    console.print(f"{verdict}: score {answer.score:.3f} at threshold {answer.threshold} [{scores}]")


@app.command("serve")
def serve(
    host: str = "127.0.0.1",
    port: int = 8100,
    threads: Annotated[int, typer.Option(help="torch threads (the cores it may use).")] = 1,
) -> None:
    """Serve trained classifiers to the gateway (CHARTER_CLASSIFIER_URL): each is loaded
    once, from this machine's artifact store."""
    import torch
    import uvicorn

    from charter import log_format
    from services.classifier.server import create_app

    settings = get_settings()
    log_format.configure(settings.log_json)
    torch.set_num_threads(threads)
    uvicorn.run(
        create_app(settings),
        host=host,
        port=port,
        log_config=log_format.dict_config(settings.log_json),
    )
