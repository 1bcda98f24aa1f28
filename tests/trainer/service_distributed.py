"""The trainer service under ``accelerate launch``: what ``test_trainer_service.py`` launches.

    accelerate launch --multi_gpu --num_processes 2 tests/trainer/service_distributed.py \
        OUT_DIR SETTINGS_JSON RUNS

Every process builds the service from the same settings and runs ``run_once`` RUNS
times; each writes ``rank-<i>.json`` with what its calls returned. The API URL and
key come from ``CHARTER_API_URL`` and ``CHARTER_API_KEY``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from charter.client import CharterClient  # noqa: E402
from charter.settings import Settings  # noqa: E402
from services.trainer.daemon import TrainerService  # noqa: E402


def main(out: Path, settings_json: str, runs: int) -> None:
    import torch

    torch.set_num_threads(1)
    settings = Settings(_env_file=None, **json.loads(settings_json))  # type: ignore[call-arg]
    with CharterClient(os.environ["CHARTER_API_URL"], os.environ["CHARTER_API_KEY"]) as client:
        service = TrainerService(client, settings, owner=f"dist-{os.environ.get('RANK')}")
        assert service.state is not None, "not launched as several processes"
        results = [service.run_once() for _ in range(runs)]
        service.close()
    rank = service.state.process_index
    record = {"rank": rank, "world_size": service.state.num_processes, "results": results}
    (out / f"rank-{rank}.json").write_text(json.dumps(record, default=str))


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]))
