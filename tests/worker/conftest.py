"""Fixtures: one moto server per session; per test, fresh queues, bucket, receiver and proxy."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.worker.harness import FaultProxy, Stack, processes_using, wait_until
from worker.embedded import CallbackReceiver, EmbeddedAWS


@pytest.fixture(scope="session")
def moto_server() -> Iterator[EmbeddedAWS]:
    aws = EmbeddedAWS()
    yield aws
    aws.stop()


@pytest.fixture
def stack(moto_server: EmbeddedAWS, tmp_path: Path) -> Iterator[Stack]:
    yield from _stack(moto_server, tmp_path, fifo=False)


@pytest.fixture
def fifo_stack(moto_server: EmbeddedAWS, tmp_path: Path) -> Iterator[Stack]:
    """As ``stack``, on FIFO queues (``….fifo``)."""
    yield from _stack(moto_server, tmp_path, fifo=True)


@pytest.fixture(params=["standard", "fifo"])
def any_stack(moto_server: EmbeddedAWS, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Stack]:
    """As ``stack``, once on standard queues and once on FIFO queues."""
    yield from _stack(moto_server, tmp_path, fifo=request.param == "fifo")


def _stack(moto_server: EmbeddedAWS, tmp_path: Path, *, fifo: bool) -> Iterator[Stack]:
    aws = EmbeddedAWS.__new__(EmbeddedAWS)  # share the server, not the queues
    aws.server, aws.endpoint = moto_server.server, moto_server.endpoint
    aws.queues, aws.dead_letters = {}, {}
    aws.provision(f"t{uuid.uuid4().hex[:10]}", visibility=4, max_receives=3, fifo=fifo)
    world = Stack(aws, CallbackReceiver(secret="s3cret-for-tests"), FaultProxy(aws.endpoint), tmp_path)
    yield world
    for worker in world.workers:
        worker.stop()
    world.receiver.stop()
    world.proxy.stop()
    tmp = tmp_path / "tmp"
    assert wait_until(lambda: processes_using(tmp) == [], 10), processes_using(tmp)
    assert not tmp.exists() or list(tmp.iterdir()) == [], "a job directory was left behind"


@pytest.fixture
def unused_port() -> int:
    """A loopback port nothing listens on (as the metadata address off EC2: refused at once)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port
