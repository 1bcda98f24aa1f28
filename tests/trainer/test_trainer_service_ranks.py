"""The trainer service's rules for several processes, with a stand-in process state and
API client: only the main process talks to the API; the others follow what it shares.

The real thing (two gloo processes under ``accelerate launch`` against a gateway) is
``test_two_processes_share_a_run_and_only_rank_0_talks_to_the_api``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from charter.settings import Settings
from services.trainer.daemon import TrainerService

RUN = {"id": "run-1", "type": "pm", "config": {"base_model": "tiny"}, "dataset": "prefs@1"}


@dataclass
class State:
    is_main_process: bool
    num_processes: int = 2


class Client:
    """Records the calls a main process makes; a follower must make none."""

    def __init__(self, run: dict[str, Any] | None) -> None:
        self.queued = None if run is None else run | {"lease_token": "secret"}
        self.calls: list[str] = []

    def claim_run(self, owner: str, types: Any) -> dict[str, Any] | None:
        self.calls.append("claim")
        run, self.queued = self.queued, None
        return run

    def run_heartbeat(self, run_id: str, token: str) -> None:
        self.calls.append("heartbeat")

    def fail_run(self, run_id: str, token: str, reason: str) -> dict[str, Any]:
        self.calls.append("fail")
        return {"id": run_id, "status": "failed", "error": reason}

    def complete_run(self, run_id: str, token: str, uri: str) -> dict[str, Any]:
        self.calls.append("complete")
        return {"id": run_id, "status": "completed", "artifact_uri": uri}


def service(tmp_path: Path, client: Any, *, main: bool) -> tuple[TrainerService, list[Any]]:
    settings = Settings(_env_file=None, env="test", data_dir=tmp_path, artifacts_dir=tmp_path)  # type: ignore[call-arg]
    trainer = TrainerService(client, settings, owner="t", state=State(is_main_process=main))
    shared: list[Any] = []

    def share(value: Any) -> Any:
        shared.append(value)
        return value

    trainer.share = share  # type: ignore[method-assign]
    return trainer, shared


def test_main_process_tells_the_others_when_nothing_is_queued(tmp_path: Path) -> None:
    trainer, shared = service(tmp_path, Client(None), main=True)
    assert trainer.run_once() is None
    assert shared == [None]


def test_a_refused_run_is_failed_before_anyone_trains(tmp_path: Path) -> None:
    client = Client(RUN | {"type": "rlhf"})
    trainer, shared = service(tmp_path, client, main=True)
    failed = trainer.run_once()
    assert failed["status"] == "failed" and "unknown run type 'rlhf'" in failed["error"]
    assert shared == [None]  # the followers wait for a run: they are told there is none
    assert client.calls == ["claim", "fail"]


def test_a_failure_in_training_is_reported_then_stops_the_group(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = Client(RUN)
    trainer, shared = service(tmp_path, client, main=True)
    monkeypatch.setattr(trainer, "prepare", lambda run: "prepared")

    def crash(prepared: Any, run_id: str, token: str | None) -> Path:
        raise RuntimeError("CUDA error: an illegal memory access")

    monkeypatch.setattr(trainer, "train", crash)
    with pytest.raises(RuntimeError, match="illegal memory access"):
        trainer.run_once()
    assert client.calls == ["claim", "fail"]
    ((run, prepared),) = shared
    assert run["id"] == "run-1" and "lease_token" not in run and prepared == "prepared"


def test_a_follower_trains_what_it_is_given_without_the_api(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trainer, _ = service(tmp_path, object(), main=False)  # any API call would fail
    trained: list[tuple[Any, str, str | None]] = []
    monkeypatch.setattr(trainer, "share", lambda value: (RUN, "prepared"))
    monkeypatch.setattr(
        trainer, "train", lambda p, run_id, token: trained.append((p, run_id, token)) or tmp_path
    )
    assert trainer.run_once() == RUN
    assert trained == [("prepared", "run-1", None)]  # no lease token on a follower

    monkeypatch.setattr(trainer, "share", lambda value: None)
    assert trainer.run_once() is None
