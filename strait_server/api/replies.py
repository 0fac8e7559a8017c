"""Reply sizes. gRPC refuses to send a message over the server's limit, and a client refuses to receive one over
its own (4 MiB unless configured): a caller would get RESOURCE_EXHAUSTED for a call that did its work. Lists are
cut to a byte budget instead, and a batch whose FULL reply cannot fit is refused before anything is written."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Generic, NamedTuple, TypeVar

from google.protobuf.message import Message

from strait_client.v1 import job_pb2, run_pb2
from strait_server import errors, model
from strait_server.api import convert

# What gRPC clients accept unless configured otherwise (the default of every gRPC library).
CLIENT_RECEIVE_LIMIT = 4 * 1024 * 1024
# Left for a reply's other fields (page token, flags) besides its list.
_MARGIN = 64 * 1024
# At most what an item takes in a repeated field besides its own bytes: a field tag and a length prefix.
ITEM_FRAMING = 6
# The fields a new run's FULL view has beyond those echoed from its RunOptions (payload, tags, metadata, keys):
# ids, status, counters, times, timeout, and a byte more per echoed field and map entry, whose field numbers
# are larger in Run. About 250 bytes with every one of them at its widest (tests/unit/test_replies.py).
FULL_RUN_OVERHEAD = 512

T = TypeVar("T")
M = TypeVar("M", bound=Message)


def budget(max_message_bytes: int) -> int:
    """Bytes the items of one reply may take: under the server's limit and under clients' default one."""
    limit = min(max_message_bytes, CLIENT_RECEIVE_LIMIT)
    return max(limit - _MARGIN, limit // 2)


class Page(NamedTuple, Generic[T, M]):
    messages: list[M]
    # The last item sent when more follow (the next page starts after it); None at the end of the list.
    last: T | None


def page(items: Sequence[T], to_message: Callable[[T], M], *, size: int, max_bytes: int,
         cut: bool = False) -> Page[T, M]:
    """The first `size` of `items` (which holds one more when more follow), fewer when their messages would
    pass `max_bytes`; never none, so that paging always moves on (no single item comes near the limit).
    `cut`: the store stopped the list short by a byte bound of its own, so more follow."""
    messages: list[M] = []
    total = 0
    for item in items[:size]:
        message = to_message(item)
        total += message.ByteSize() + ITEM_FRAMING
        if total > max_bytes and messages:
            break
        messages.append(message)
    more = cut or len(messages) < len(items)
    return Page(messages, items[len(messages) - 1] if more and messages else None)


class FullView:
    """The FULL view of a BatchTriggerJob reply, refused (INVALID_ARGUMENT on `view`) when it would not fit. The
    request tells the size of the runs it creates; runs that keys return (written earlier, or shared by several
    requested runs) are measured once known. Each distinct run is built once, however many it answers."""

    def __init__(self, options: Sequence[job_pb2.RunOptions], max_bytes: int) -> None:
        self._options = options
        self._max_bytes = max_bytes
        self._built: dict[str, run_pb2.Run] = {}

    def _refusal(self) -> errors.InvalidArgument:
        return errors.InvalidArgument([errors.FieldViolation(
            "view", f"the FULL reply would pass the {self._max_bytes:,}-byte reply limit: use RUN_VIEW_BASIC or a "
                    "smaller batch")])

    def require_new_runs_fit(self, job_tags: Mapping[str, str]) -> None:
        """Before anything is written: the reply, were every run new, must fit. A new run echoes its options'
        payload, tags, metadata and keys (their encoded size bounds them), the job's tags, and fields of its
        own."""
        per_run = FULL_RUN_OVERHEAD + ITEM_FRAMING + run_pb2.Run(tags=job_tags).ByteSize()
        if sum(o.ByteSize() for o in self._options) + per_run * len(self._options) > self._max_bytes:
            raise self._refusal()

    def require_fits(self, runs: Iterable[model.Run]) -> None:
        """The reply of these runs must fit."""
        total = 0
        for run in runs:
            total += self._message(run).ByteSize() + ITEM_FRAMING
            if total > self._max_bytes:
                raise self._refusal()

    def messages(self, runs: Iterable[model.Run]) -> list[run_pb2.Run]:
        return [self._message(r) for r in runs]

    def _message(self, run: model.Run) -> run_pb2.Run:
        message = self._built.get(run.id)
        if message is None:
            self._built[run.id] = message = convert.run(run)
        return message
