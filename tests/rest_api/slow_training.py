"""A training job slow enough that the jobs queued behind it wait: the API tests run one job
at a time (one embedded job process, or one Celery worker process), so this is how they
hold a job `queued` long enough to cancel it or to act on its model."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

SLOW_ROWS = 20_000


def submit_slow_training(client: TestClient, work_dir: Path, n_estimators: int) -> str:
    """Queue a random forest of `n_estimators` trees on 20,000 noisy rows as model `slow`;
    its job id."""
    csv_path = work_dir / "slow.csv"
    if not csv_path.exists():
        rows = "\n".join(f"{i % 97},{(i * 7) % 13},{'ab'[i % 2]}" for i in range(SLOW_ROWS))
        csv_path.write_text("x,y,label\n" + rows + "\n")
    with csv_path.open("rb") as file:
        answer = client.post(
            "/models/slow/train",
            files={"csv_file": ("slow.csv", file)},
            data={"target_variable": "label", "params": f'{{"n_estimators": {n_estimators}}}'},
        )
    assert answer.status_code == 202, answer.text
    return str(answer.json()["id"])
