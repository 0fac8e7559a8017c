"""What a dispatch request tells the code of a run: the run, the attempt, its token and the last checkpoint."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class DispatchInfo:
    """The Strait headers of one dispatch (docs/dispatch-contract.md)."""

    run_id: str
    job_id: str
    attempt: int
    token: str
    last_checkpoint: Any | None

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> DispatchInfo:
        """Reads X-Run-Id, X-Run-Token, X-Job-Id, X-Attempt and X-Last-Checkpoint (names in any case).

        Args:
            headers: The dispatch request's headers.

        Returns:
            The dispatch's information.

        Raises:
            ValueError: X-Run-Id or X-Run-Token is missing: not a Strait dispatch.
        """
        lower = {k.lower(): v for k, v in headers.items()}
        try:
            run_id, token = lower["x-run-id"], lower["x-run-token"]
        except KeyError as missing:
            raise ValueError(f"not a Strait dispatch: header {missing} is missing") from None
        checkpoint = lower.get("x-last-checkpoint")
        return cls(run_id=run_id, job_id=lower.get("x-job-id", ""), attempt=int(lower.get("x-attempt", "1")),
                   token=token, last_checkpoint=json.loads(checkpoint) if checkpoint else None)

    @classmethod
    def from_asgi_scope(cls, scope: Mapping[str, Any]) -> DispatchInfo:
        """From an ASGI HTTP scope (Starlette, FastAPI, Django ASGI...), whose headers are byte pairs.

        Args:
            scope: The ASGI scope of the dispatch request.

        Returns:
            The dispatch's information.

        Raises:
            ValueError: Not a Strait dispatch.
        """
        return cls.from_headers({k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", ())})
