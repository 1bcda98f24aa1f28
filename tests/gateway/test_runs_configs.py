"""A run's config is validated at submission, stored normalised with its hash, and the
trainer's report of the hash it trained with must match it."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select

from charter.core.run_configs import RUN_CONFIGS, PMConfig, PPOConfig
from charter.db.models import TrainingRun
from charter.db.session import session_factory
from tests.gateway.test_runs_api import claim, create, datasets, run_dir

__all__ = ["datasets"]  # the fixture, imported for this module's tests

# The body of each run type, up to its config (validation refuses a bad config before
# the dataset or the reward run is looked up).
BODIES: dict[str, dict[str, Any]] = {
    "sft": {"type": "sft", "dataset": "revisions"},
    "pm": {"type": "pm", "dataset": "prefs"},
    "dpo": {"type": "dpo", "dataset": "prefs"},
    "ppo": {"type": "ppo", "dataset": "revisions", "reward_run": "0" * 32},
    "rloo": {"type": "rloo", "dataset": "revisions", "reward_run": "0" * 32},
    "grpo": {"type": "grpo", "dataset": "prefs", "reward_run": "0" * 32},
    "classifier": {"type": "classifier", "dataset": "guard"},
}


def _stored_runs(engine) -> int:
    with session_factory(engine)() as s:
        return s.scalar(select(func.count()).select_from(TrainingRun))


@pytest.mark.parametrize("kind", BODIES)
def test_an_unknown_config_field_is_422_naming_it(client, datasets, engine, kind):
    response = create(client, datasets, **BODIES[kind], config={"learnin_rate": 1e-4})
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["field"] == "body.config.learnin_rate"
    assert f"a {kind} run's config has no learnin_rate" in body["detail"]
    assert _stored_runs(engine) == 0


@pytest.mark.parametrize(
    ("kind", "config", "field"),
    [
        ("sft", {"learning_rate": 2.0}, "learning_rate"),
        ("sft", {"max_length": 1}, "max_length"),
        ("pm", {"max_steps": 0}, "max_steps"),
        ("pm", {"center_rewards_coefficient": -1.0}, "center_rewards_coefficient"),
        ("pm", {"eval_fraction": 1.0}, "eval_fraction"),
        ("dpo", {"beta": 0.0}, "beta"),
        ("dpo", {"loss_type": "sft"}, "loss_type"),
        ("ppo", {"gamma": 1.5}, "gamma"),
        ("ppo", {"batch_size": 10, "mini_batch_size": 4}, "mini_batch_size"),
    ],
)
def test_an_out_of_range_value_is_422_naming_it(client, datasets, engine, kind, config, field):
    response = create(client, datasets, **BODIES[kind], config=config)
    assert response.status_code == 422, response.text
    assert response.json()["field"] == f"body.config.{field}"
    assert _stored_runs(engine) == 0


@pytest.mark.parametrize(
    ("kind", "config", "field"),
    [
        ("sft", {"batch_size": 4}, "batch_size"),  # a PPO field
        ("ppo", {"eval_fraction": 0.2}, "eval_fraction"),  # PPO holds nothing out
        ("pm", {"bf16": "yes"}, "bf16"),  # JSON types as they are
        ("pm", {"learning_rate": "1e-5"}, "learning_rate"),
    ],
)
def test_each_type_takes_its_own_fields_with_their_json_types(
    client, datasets, kind, config, field
):
    response = create(client, datasets, **BODIES[kind], config=config)
    assert response.status_code == 422, response.text
    assert response.json()["field"] == f"body.config.{field}"


@pytest.mark.parametrize(
    ("kind", "dataset", "field", "owners"),
    [
        ("sft", "revisions", "reference_model", "ppo runs only"),
        ("sft", "revisions", "reward_run", "grpo and ppo and rloo runs only"),
        ("rloo", "prefs", "reference_model", "ppo runs only"),  # its reference is base_model
    ],
)
def test_fields_of_other_run_types_are_refused_naming_them(
    client, datasets, kind, dataset, field, owners
):
    value = "0" * 32 if field == "reward_run" else "m"
    response = create(client, datasets, type=kind, dataset=dataset, **{field: value})
    assert response.status_code == 422 and response.json()["field"] == field
    assert f"{field} applies to {owners}, not {kind}" in response.json()["detail"]


def test_a_provenance_key_in_config_is_refused_saying_why(client, datasets):
    response = create(client, datasets, config={"base_model": "/etc", "learnin_rate": 1})
    assert response.status_code == 422 and response.json()["field"] == "config.base_model"
    assert "what a run trains on is given by its validated fields" in response.json()["detail"]


def test_the_stored_config_is_normalised_and_hashed(client, datasets, engine):
    run = create(client, datasets, config={"max_steps": 5, "logging_steps": 1}).json()
    expected = PMConfig(max_steps=5, logging_steps=1)
    provenance = {
        "base_model": "smollm2",
        "reward_run": None,
        "reference_model": "smollm2",
        "dataset": "prefs@1",
    }
    assert run["config"] == provenance | expected.as_dict()  # every default filled in
    assert run["config"]["learning_rate"] == 1e-5 and run["config"]["soft_labels"] is True
    assert run["config_hash"] == expected.config_hash() and run["trained_config_hash"] is None
    with session_factory(engine)() as s:
        row = s.get(TrainingRun, run["id"])
        assert row.config == run["config"] and row.config_hash == expected.config_hash()
    fields = {k: v for k, v in row.config.items() if k not in provenance}
    assert PMConfig.from_dict(fields).config_hash() == row.config_hash  # what the trainer does
    # the claim carries the hash the trainer must match
    assert claim(client, datasets)["config_hash"] == run["config_hash"]


def test_the_hash_follows_hashed_fields_only(client, datasets):
    def config_hash(**config: Any) -> str:
        response = create(client, datasets, config=config)
        assert response.status_code == 201, response.text
        return response.json()["config_hash"]

    plain = config_hash(max_steps=5)
    assert config_hash(max_steps=5, learning_rate=1e-5) == plain  # the default, spelt out
    assert config_hash(max_steps=5, logging_steps=1, eval_steps=2, save_steps=2) == plain
    assert config_hash(max_steps=6) != plain
    assert config_hash(max_steps=5, eval_fraction=0.2) != plain


def test_each_type_stores_its_own_config(client, datasets, settings):
    pm = create(client, datasets).json()
    token = claim(client, datasets)["lease_token"]
    client.post(
        f"/v1/runs/{pm['id']}/complete",
        json={"lease_token": token, "artifact_uri": run_dir(settings, pm["id"]).as_uri()},
        headers=datasets,
    ).raise_for_status()
    bodies = {
        k: b | {"reward_run": pm["id"]} if "reward_run" in b else b for k, b in BODIES.items()
    }
    for kind, body in bodies.items():
        run = create(client, datasets, **body).json()
        cls = RUN_CONFIGS[kind]  # type: ignore[index]
        assert set(cls.model_fields) <= set(run["config"]), kind
        assert run["config_hash"] == cls().config_hash(), kind
    ppo = create(client, datasets, **bodies["ppo"], config={"batch_size": 8, "mini_batch_size": 4})
    assert ppo.status_code == 201, ppo.text
    assert ppo.json()["config_hash"] == PPOConfig(batch_size=8, mini_batch_size=4).config_hash()


def _complete(client, headers, settings, run, token, **body):
    uri = (run_dir(settings, run["id"]) / "model").as_uri()
    return client.post(
        f"/v1/runs/{run['id']}/complete",
        json={"lease_token": token, "artifact_uri": uri, **body},
        headers=headers,
    )


def test_complete_records_the_trained_hash_when_it_matches(client, datasets, engine, settings):
    run = create(client, datasets, config={"max_steps": 3}).json()
    token = claim(client, datasets)["lease_token"]
    done = _complete(client, datasets, settings, run, token, config_hash=run["config_hash"])
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "completed"
    assert done.json()["trained_config_hash"] == run["config_hash"]
    with session_factory(engine)() as s:
        assert s.get(TrainingRun, run["id"]).trained_config_hash == run["config_hash"]


def test_complete_with_another_hash_is_409_and_changes_nothing(client, datasets, engine, settings):
    run = create(client, datasets).json()
    token = claim(client, datasets)["lease_token"]
    other = PMConfig(learning_rate=3e-5).config_hash()
    assert other != run["config_hash"]
    refused = _complete(client, datasets, settings, run, token, config_hash=other)
    assert refused.status_code == 409, refused.text
    assert refused.json()["field"] == "config_hash"
    assert other in refused.json()["detail"] and run["config_hash"] in refused.json()["detail"]
    with session_factory(engine)() as s:
        row = s.get(TrainingRun, run["id"])
        assert row.status == "running" and row.trained_config_hash is None
        assert row.artifact_uri is None
    malformed = _complete(client, datasets, settings, run, token, config_hash="not-a-hash")
    assert malformed.status_code == 422 and malformed.json()["field"] == "body.config_hash"
    # a trainer that sends no hash (an older one) still completes; nothing is recorded
    done = _complete(client, datasets, settings, run, token)
    assert done.status_code == 200 and done.json()["trained_config_hash"] is None


def test_a_run_stored_without_a_hash_records_what_it_was_trained_with(
    client, datasets, engine, settings
):
    run = create(client, datasets).json()
    with session_factory(engine)() as s, s.begin():
        s.get(TrainingRun, run["id"]).config_hash = None  # queued before hashes existed
    token = claim(client, datasets)["lease_token"]
    done = _complete(client, datasets, settings, run, token, config_hash=run["config_hash"])
    assert done.status_code == 200, done.text
    assert done.json()["trained_config_hash"] == run["config_hash"]


def test_the_openapi_schema_has_one_body_per_run_type(app):
    schema = app.openapi()
    components = schema["components"]["schemas"]
    body = schema["paths"]["/v1/runs"]["post"]["requestBody"]["content"]["application/json"]
    run_create = components[body["schema"]["$ref"].rsplit("/", 1)[1]]
    assert run_create["discriminator"]["propertyName"] == "type"
    variants = {
        kind: components[ref.rsplit("/", 1)[1]]
        for kind, ref in run_create["discriminator"]["mapping"].items()
    }
    assert set(variants) == set(RUN_CONFIGS)
    for kind, variant in variants.items():
        assert variant["additionalProperties"] is False
        rewarded = kind in ("ppo", "rloo", "grpo")
        assert ("reward_run" in variant["properties"]) == rewarded, kind
        assert ("reference_model" in variant["properties"]) == (kind == "ppo"), kind
        config = components[variant["properties"]["config"]["$ref"].rsplit("/", 1)[1]]
        assert config["additionalProperties"] is False
        assert set(config["properties"]) == set(RUN_CONFIGS[kind].model_fields)  # type: ignore[index]
        assert all(p.get("description") for p in config["properties"].values()), kind
    run_out = components["RunOut"]["properties"]
    assert {"config_hash", "trained_config_hash"} <= set(run_out)
