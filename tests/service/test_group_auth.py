"""Consumer groups under `serve --auth`: who may call which ConsumerGroupService RPC.

A subscriber is a member and reader of groups; only an admin creates, changes and deletes
them and replays or discards their parked events; a publisher may not consume; a principal
limited to some pipelines may call none (a group carries any pipeline's events); a call
without a token is UNAUTHENTICATED. Refused calls change nothing.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from pipeline_events import domain
from pipeline_events.client import (
    GROUP_RPC_METHODS,
    Delivery,
    EventClient,
    GroupSettings,
    PermissionDeniedError,
    RetryPolicy,
    WorkerStats,
)
from pipeline_events.consumer import ParkEvent
from tests.service.conftest import ServerProcess, start_server_process, stop_process
from tests.service.groups_contract import chunk_events
from tests.service.test_auth import MINE, make_token

ONCE = RetryPolicy(max_attempts=1)
FAST = GroupSettings(max_deliveries=3, backoff=(0.01,), ack_timeout=60.0)
OTHER = GroupSettings(max_deliveries=7, backoff=(0.01,), ack_timeout=60.0)
WAIT = 60.0
SUBSCRIBER_RPCS = {"Consume", "ListConsumerGroups", "GetConsumerGroup", "ListParkedEvents"}


@pytest.fixture(scope="module")
def tokens(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    directory = tmp_path_factory.mktemp("group-auth")
    made = {
        "publisher": make_token("ingest", "--role", "publisher"),
        "subscriber": make_token("dashboard", "--role", "subscriber"),
        "admin": make_token("ops", "--role", "admin"),
        "limited": make_token(
            "one-pipeline", "--role", "publisher", "--role", "subscriber", "--pipeline", str(MINE)
        ),
        "limited-admin": make_token("one-pipeline-ops", "--role", "admin", "--pipeline", str(MINE)),
    }
    path = directory / "principals.toml"
    path.write_text("\n".join(toml for _, toml in made.values()))
    path.chmod(0o600)
    return {"path": path, **{name: token for name, (token, _) in made.items()}}


@pytest.fixture
def server(tmp_path: Path, tokens: dict[str, Any]) -> Iterator[ServerProcess]:
    process = start_server_process(
        f"sqlite:///{tmp_path}/events.db", options=["--auth", str(tokens["path"])]
    )
    yield process
    assert stop_process(process.process) == 0


def client(server: ServerProcess, token: Any | None) -> EventClient:
    return EventClient(server.target, token=None if token is None else str(token), retry=ONCE)


def wait_for(condition: Callable[[], Any], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


class Consuming:
    """`consume("g")` on a thread; stopped on exit (or after WAIT, were it never refused)."""

    def __init__(self, caller: EventClient, handler: Callable[[Delivery], Any] | None = None):
        self.seen: list[Delivery] = []
        self.stop = threading.Event()
        self.stats: WorkerStats | None = None
        self.error: BaseException | None = None

        def handle(delivery: Delivery) -> None:
            self.seen.append(delivery)
            if handler is not None:
                handler(delivery)

        def run() -> None:
            try:
                self.stats = caller.consume("g", handle, stop=self.stop)
            except BaseException as error:
                self.error = error

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        self.timer = threading.Timer(WAIT, self.stop.set)
        self.timer.start()

    def ended(self) -> WorkerStats | BaseException:
        """Wait for consume() to return (or raise) without being stopped."""
        self.thread.join(WAIT + 5)
        self.timer.cancel()
        return self.error if self.error is not None else self.stats  # type: ignore[return-value]

    def stopped(self) -> WorkerStats:
        self.stop.set()
        result = self.ended()
        assert isinstance(result, WorkerStats), result
        return result


def consume_refused(caller: EventClient) -> None:
    """Consume, raising what refused it (the stop never comes before a refusal)."""
    result = Consuming(caller).ended()
    if isinstance(result, BaseException):
        raise result
    raise AssertionError("consume was not refused")


#: One call of every ConsumerGroupService RPC, on the group "g".
CALLS: dict[str, Callable[[EventClient], Any]] = {
    "CreateConsumerGroup": lambda c: c.create_group("new-group", settings=FAST),
    "UpdateConsumerGroup": lambda c: c.update_group("g", settings=OTHER),
    "DeleteConsumerGroup": lambda c: c.delete_group("g"),
    "ListConsumerGroups": lambda c: c.groups(),
    "GetConsumerGroup": lambda c: c.group("g"),
    "Consume": consume_refused,
    "ListParkedEvents": lambda c: c.parked("g"),
    "ReplayParkedEvents": lambda c: c.replay_parked("g"),
    "DiscardParkedEvents": lambda c: c.discard_parked("g"),
}


def test_every_group_rpc_is_covered() -> None:
    assert set(CALLS) == set(GROUP_RPC_METHODS)


def refused(call: Callable[[], Any]) -> PermissionDeniedError:
    with pytest.raises(PermissionDeniedError) as error:
        call()
    return error.value


def group_unchanged(server: ServerProcess, tokens: dict[str, Any]) -> None:
    """The group "g" as made by `make_group`, no other group, no member left behind."""
    with client(server, tokens["admin"]) as admin:
        (group,) = admin.groups()
        assert (group.name, group.settings.max_deliveries, group.members) == ("g", 3, 0)


def make_group(server: ServerProcess, tokens: dict[str, Any], events: int = 3) -> list[str]:
    with client(server, tokens["admin"]) as admin:
        assert admin.create_group("g", settings=FAST)[1]
        published = chunk_events(events)
        admin.publish(published)
    return [str(e.event_id) for e in published]


def test_a_subscriber_consumes_and_reads_groups_but_does_not_manage_them(
    server: ServerProcess, tokens: dict[str, Any]
) -> None:
    ids = make_group(server, tokens)
    with client(server, tokens["subscriber"]) as subscriber:
        assert [g.name for g in subscriber.groups()] == ["g"]
        assert subscriber.group("g").name == "g"
        assert subscriber.parked("g") == []
        worker = Consuming(subscriber)
        wait_for(lambda: len(worker.seen) >= 3, "the subscriber's deliveries")
        stats = worker.stopped()
        assert sorted(d.event.event_id for d in worker.seen) == sorted(ids)
        assert stats.acked == 3
        wait_for(lambda: subscriber.group("g").checkpoint == subscriber.group("g").head, "acks")
        for rpc in sorted(set(CALLS) - SUBSCRIBER_RPCS):
            denied = refused(lambda rpc=rpc: CALLS[rpc](subscriber))
            assert denied.code == grpc.StatusCode.PERMISSION_DENIED, rpc
            assert f"dashboard may not call {rpc}" in str(denied), rpc
    group_unchanged(server, tokens)


def test_an_admin_may_call_every_group_rpc(server: ServerProcess, tokens: dict[str, Any]) -> None:
    ids = make_group(server, tokens)
    poison = ids[1]
    healed = threading.Event()

    def handler(delivery: Delivery) -> None:
        if delivery.event.event_id == poison and not healed.is_set():
            raise ParkEvent("not yet")

    with client(server, tokens["admin"]) as admin:
        assert admin.update_group("g", settings=OTHER).settings.max_deliveries == 7
        worker = Consuming(admin, handler)
        wait_for(lambda: admin.group("g").parked == 1, "the parked event")
        assert [p.event.event_id for p in admin.parked("g")] == [poison]
        healed.set()
        assert admin.replay_parked("g") == 1
        wait_for(lambda: admin.group("g").parked == 0, "the replay handled")
        stats = worker.stopped()
        assert (stats.acked, stats.parked) == (3, 1)
        assert [d.event.event_id for d in worker.seen].count(poison) == 2
        assert admin.discard_parked("g") == 0
        assert [g.name for g in admin.groups()] == ["g"]
        admin.delete_group("g")
        assert admin.groups() == []


def test_a_publisher_may_not_consume(server: ServerProcess, tokens: dict[str, Any]) -> None:
    make_group(server, tokens)
    with client(server, tokens["publisher"]) as publisher:
        denied = refused(lambda: consume_refused(publisher))
        assert denied.code == grpc.StatusCode.PERMISSION_DENIED
        assert "ingest may not call Consume" in str(denied)
        for rpc in sorted(set(CALLS) - {"Consume"}):
            assert refused(lambda rpc=rpc: CALLS[rpc](publisher)).code == (
                grpc.StatusCode.PERMISSION_DENIED
            ), rpc
    group_unchanged(server, tokens)


@pytest.mark.parametrize("who", ["limited", "limited-admin"])
def test_a_principal_limited_to_pipelines_may_call_no_group_rpc(
    server: ServerProcess, tokens: dict[str, Any], who: str
) -> None:
    make_group(server, tokens)
    with client(server, tokens[who]) as limited:
        limited.publish([_chunk_of(MINE)])  # its own pipeline: allowed
        for rpc, call in CALLS.items():
            denied = refused(lambda call=call: call(limited))
            assert denied.code == grpc.StatusCode.PERMISSION_DENIED, rpc
        # Even a group filtered on its own pipeline.
        denied = refused(lambda: limited.create_group("mine", pipeline_ids=[MINE]))
        assert denied.code == grpc.StatusCode.PERMISSION_DENIED
    group_unchanged(server, tokens)


def test_a_call_without_a_token_is_unauthenticated(
    server: ServerProcess, tokens: dict[str, Any]
) -> None:
    make_group(server, tokens)
    for token in (None, "pe_AAAAAAAA_" + "x" * 43):
        with client(server, token) as stranger:
            for rpc, call in CALLS.items():
                denied = refused(lambda call=call: call(stranger))
                assert denied.code == grpc.StatusCode.UNAUTHENTICATED, (token, rpc)
    group_unchanged(server, tokens)


def _chunk_of(pipeline: uuid.UUID) -> domain.ChunkProcessed:
    return domain.ChunkProcessed.new(pipeline, uuid.uuid4(), uuid.uuid4(), 0, 1, "s", 1)
