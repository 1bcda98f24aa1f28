"""The dashboard over jobs labelled by the real SmolLM2-135M-Instruct (on the CPU).

The model is the packaged GGUF prepared once per machine (``charter models prepare``)
into ``$CHARTER_MODELS_DIR``; nothing is downloaded.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, select

from charter.db.models import Label
from charter.db.session import session_factory
from charter.embedded import GatewayThread
from tests.dashboard.conftest import Tab

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("gguf")

from charter.model_store import prepare_smollm2
from workers.engine_loader import load_engines
from workers.runner import ChunkRunner

MODEL = "smollm2-dashboard"
PAIRS = [
    {"prompt": "What is 2 + 2?", "response_a": "4", "response_b": "It is five, I think."},
    {"prompt": "Name a colour.", "response_a": "Blue.", "response_b": "I refuse to answer."},
    {"prompt": "Say hello.", "response_a": "Hello!", "response_b": "Go away."},
]
PROMPTS = [{"prompt": "How do I boil an egg?"}]


@pytest.mark.slow
def test_pages_over_real_model_labels(
    make_settings: Any, engine: Engine, browser: Any, issue: Any, default_document: Any
) -> None:
    models_dir = Path(os.environ.get("CHARTER_MODELS_DIR", "~/.cache/charter/models")).expanduser()
    smollm2 = prepare_smollm2(models_dir / "smollm2")
    settings = make_settings(
        worker_engine="transformers", models={MODEL: str(smollm2)}, worker_models=[MODEL]
    )
    key = issue("alpha", ("admin",))
    runner = ChunkRunner(session_factory(engine), load_engines(settings), settings, "cpu:1")
    with GatewayThread(settings) as gateway:
        http = httpx.Client(base_url=gateway.url, headers=key.headers, timeout=60)
        assert http.post("/v1/constitutions", json=default_document).status_code in (200, 201)

        def run(rows: list[dict[str, Any]], **body: Any) -> str:
            batch = http.post("/v1/batches", json={"name": "b", "rows": rows}).json()
            job = http.post(
                "/v1/jobs",
                json={"batch_id": batch["id"], "model": MODEL, "constitution": "default", **body},
            ).json()
            for chunk in range(job["chunk_count"]):
                runner.run_chunk(job["id"], chunk)
            return str(job["id"])

        compare = run(PAIRS, type="compare", params={"swap": True})
        sl = run(PROMPTS, type="sl_cai", params={"sampling": {"max_tokens": 24}})

        context = browser.new_context()
        try:
            tab = Tab(context.new_page(), gateway.url)
            tab.page.on(
                "console", lambda m: tab.console.append(m.text) if m.type == "error" else None
            )
            tab.page.on("requestfailed", lambda r: tab.failed.append(r.url))
            tab.page.on("request", lambda r: tab.requests.append(r.url))
            tab.login(key.key)
            tab.goto(f"/dashboard/jobs/{compare}")
            with session_factory(engine)() as s:
                labels = list(s.scalars(select(Label).where(Label.job_id == compare)))
            assert len(labels) == len(PAIRS) and all(
                label.engine == "transformers" for label in labels
            )
            assert sum(tab.bars("Soft labels P(A)").values()) == len(labels)
            swaps = [
                label.swap_disagreement for label in labels if label.swap_disagreement is not None
            ]
            shown = tab.page.query_selector("#judge [data-stat=swap_disagreement] .value")
            assert float(shown.get_attribute("data-value")) == pytest.approx(
                sum(swaps) / len(swaps)
            )

            tab.goto(f"/dashboard/jobs/{sl}")
            [chain] = tab.page.query_selector_all("article.chain")
            with session_factory(engine)() as s:
                [label] = s.scalars(select(Label).where(Label.job_id == sl))
            assert label.completion and label.completion.split()[0] in chain.inner_text()
            tab.goto("/dashboard/models")
            assert tab.page.query_selector(f'section[data-model="{MODEL}"]') is not None
            tab.assert_clean()
        finally:
            context.close()
