"""Batch-prediction jobs on a real gunicorn server: the result file is byte for byte what
/predict/csv answers, and a 200,000-row file is predicted in bounded memory."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from testing.fastml_api import predict_as_job, submit_prediction_job
from testing.servers import Server
from tests.iris import serving_iris
from tests.users import PREDICTOR

pytestmark = pytest.mark.system

BIG_ROWS = 200_000
CHUNK_ROWS = 2_000
# Each row carries this much pass-through text, so the whole file (~55 MB) would show in the
# job's memory many times over if it were ever held at once; a chunk holds ~0.6 MB of it.
NOTE = "n" * 250
PEAK_LINE = re.compile(r"job (\S+) succeeded: (\d+) rows predicted .* peak memory (\d+) MiB")


@pytest.mark.parametrize("proba", [False, True])
def test_the_result_is_what_predict_csv_answers(
    iris_server: Server, iris_test_csv: Path, proba: bool
) -> None:
    data = iris_test_csv.read_bytes().replace(b",versicolor", b",=versicolor")  # to escape
    with iris_server.client() as client:
        answer = submit_prediction_job(client, "iris", data, proba=proba)
        assert answer.status_code == 202, answer.text
        assert answer.headers["location"] == f"/jobs/{answer.json()['id']}"
        job = predict_as_job(client, "iris", data, proba=proba)
        assert job["status"] == "succeeded", job
        assert job["rows_done"] == data.count(b"\n") - 1
        result = client.get(f"/jobs/{job['id']}/result")
        direct = client.post(
            f"/models/iris/predict/csv{'?proba=true' if proba else ''}",
            files={"csv_file": ("test.csv", data, "text/csv")},
        )
    assert result.status_code == direct.status_code == 200, (result.text, direct.text)
    assert result.headers["content-type"] == direct.headers["content-type"]
    assert b",'=versicolor," in result.content
    assert result.content == direct.content


@pytest.fixture
def chunked_server(tmp_path: Path, users_file: Path) -> Iterator[Server]:
    """A server predicting files 2,000 rows at a time, with iris trained, and a predictor user."""
    yield from serving_iris(
        tmp_path,
        {"FASTML_CSV_CHUNK_ROWS": str(CHUNK_ROWS), "FASTML_USERS_FILE": str(users_file)},
    )


@pytest.mark.timeout(900)
def test_a_large_file_is_predicted_in_bounded_memory(
    chunked_server: Server, tmp_path: Path
) -> None:
    row = f"5.1,3.5,1.4,0.2,{NOTE}\n".encode()
    header = b"sepal_length,sepal_width,petal_length,petal_width,note\n"
    big = header + row * BIG_ROWS
    with httpx.Client(base_url=chunked_server.url, auth=PREDICTOR, timeout=120) as client:
        small_job = predict_as_job(client, "iris", header + row * 10)
        big_job = predict_as_job(client, "iris", big)
        assert big_job["status"] == "succeeded", big_job
        assert big_job["rows_done"] == big_job["result"]["rows"] == BIG_ROWS
        rows = 0
        with client.stream("GET", f"/jobs/{big_job['id']}/result") as result:
            assert result.status_code == 200
            first = True
            for line in result.iter_lines():
                if first:
                    assert line == header.decode().strip() + ",prediction"
                    first = False
                    continue
                assert line == f"5.1,3.5,1.4,0.2,{NOTE},setosa"
                rows += 1
        assert rows == BIG_ROWS
    peaks = {
        match[1]: int(match[3]) for match in PEAK_LINE.finditer(chunked_server.log_path.read_text())
    }
    # A job process runs one job and exits, so each peak is that job's own. Holding the file
    # (55 MB of text, more as Python strings) would add far more than this to the small job's.
    assert peaks[big_job["id"]] - peaks[small_job["id"]] < 25, peaks
