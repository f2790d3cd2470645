"""The Celery settings that keep a job from being lost or run twice, each checked."""

from __future__ import annotations

import pytest

from ML.config import Settings
from ML.tasks import (
    QUEUE,
    RESTORE_SCAN_THROTTLE,
    RESTORE_SWEEP_SECONDS,
    TASK_NAME,
    make_celery_app,
)


@pytest.fixture
def settings() -> Settings:
    return Settings(
        broker_url="redis://127.0.0.1:1/3", job_time_limit_seconds=600, job_stop_grace_seconds=7
    )


def test_loss_preventing_settings(settings: Settings) -> None:
    app = make_celery_app(settings)
    conf = app.conf
    task = app.tasks[TASK_NAME]

    # JSON only: nothing from the broker is ever unpickled.
    assert conf.task_serializer == "json"
    assert list(conf.accept_content) == ["json"]
    assert list(conf.result_accept_content) == ["json"]
    assert task.serializer == "json"
    # Acknowledged after the job ran; back to the queue when its process dies.
    assert conf.task_acks_late is True and task.acks_late is True
    assert conf.task_reject_on_worker_lost is True and task.reject_on_worker_lost is True
    # A worker holds only the job it runs.
    assert conf.worker_prefetch_multiplier == 1
    # Time limits from the settings; the visibility timeout (in every place Celery reads
    # it) is longer than the hard limit, so Redis never hands a running job to a second worker.
    assert conf.task_soft_time_limit == 600
    assert conf.task_time_limit == 600 + 7
    for options in (conf.broker_transport_options, conf.result_backend_transport_options):
        assert options["visibility_timeout"] > conf.task_time_limit
    # A dead worker's job is looked for every sweep, not every tenth one (kombu's default).
    assert conf.broker_transport_options["unacked_restore_interval"] == RESTORE_SWEEP_SECONDS
    assert conf.broker_transport_options["unacked_restore_throttle"] == RESTORE_SCAN_THROTTLE
    assert conf.task_default_queue == QUEUE
    assert conf.broker_url == settings.broker_url


def test_the_worker_transport_reads_our_visibility_timeout(settings: Settings) -> None:
    app = make_celery_app(settings)
    with app.connection_for_read() as connection:
        channel_type = connection.transport.Channel
        options = connection.transport_options
    assert options["visibility_timeout"] > app.conf.task_time_limit
    # A dead worker's job is looked for at every restore poll (10 s), not every tenth.
    assert options["unacked_restore_throttle"] == RESTORE_SCAN_THROTTLE == 1
    for name in ("visibility_timeout", "unacked_restore_interval", "unacked_restore_throttle"):
        assert name in channel_type.from_transport_options


def test_the_celery_app_needs_a_broker() -> None:
    with pytest.raises(ValueError, match="FASTML_BROKER_URL"):
        make_celery_app(Settings())
