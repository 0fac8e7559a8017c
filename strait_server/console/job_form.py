"""The console's job forms: what a user typed into the create and edit forms, read into the Job message the API
takes (for an edit, with the mask of exactly the settings that changed), and the API's objections put back
beside the fields they are about. Only what the API cannot receive as typed (a word where a number goes, a
duration it cannot read) is refused here; every other rule is the API's."""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

from google.protobuf.duration_pb2 import Duration

from strait_client._enums import ExecutionMode
from strait_client._errors import AlreadyExistsError, StraitError
from strait_client._models import Job
from strait_client.v1 import job_pb2
from strait_server.console.job_facts import span

# What the API uses when a setting is left empty.
DEFAULT_MAX_ATTEMPTS = 3
DEFAULT_TIMEOUT = timedelta(minutes=5)
DEFAULT_QUEUE = "default"
MAX_ATTEMPTS = 100
CREATE_FIELDS = ("slug", "mode", "endpoint_url", "queue", "max_attempts", "timeout", "description")
EDIT_FIELDS = ("endpoint_url", "queue", "max_attempts", "timeout", "description")
LABELS = {"slug": "Slug", "mode": "Runs go to", "endpoint_url": "Endpoint URL", "queue": "Queue",
          "max_attempts": "Max attempts", "timeout": "Timeout per attempt", "description": "Description"}
# The form field a violation's path (relative to the request's `job`) is about, where it differs.
FORM_FIELD_OF = {"execution_mode": "mode"}
TAKEN = "is taken by another job of this project"
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNITS = {"ms": timedelta(milliseconds=1), "s": timedelta(seconds=1), "m": timedelta(minutes=1),
          "h": timedelta(hours=1), "d": timedelta(days=1)}


@dataclass(frozen=True)
class JobForm:
    """A job form as the user left it, and what is wrong with it."""

    values: Mapping[str, str] = field(default_factory=dict)
    problems: Mapping[str, str] = field(default_factory=dict)  # form field -> what is wrong ("must be ...")
    problem: str = ""  # about the form as a whole, or about settings the form does not show
    # After a stale edit: the values typed that were not saved (label, value).
    unsaved: tuple[tuple[str, str], ...] = ()
    # The etag of the job as the user's edit form showed it: a refused form sent again must still be refused if
    # the job changed meanwhile, rather than overwrite that change with the values of before it. "": the job's.
    etag: str = ""

    def value(self, name: str) -> str:
        return self.values.get(name, "")

    def problem_of(self, name: str) -> str:
        return self.problems.get(name, "")

    @property
    def refused(self) -> bool:
        return bool(self.problems or self.problem or self.unsaved)


@dataclass(frozen=True)
class Edit:
    """An edit read from the form: the changed settings in `job`, their paths in `mask`."""

    job: job_pb2.Job
    mask: list[str]
    problems: dict[str, str]


def typed(form: Mapping[str, Any], names: Collection[str]) -> dict[str, str]:
    """The text of each of the form's fields `names` ("" when absent)."""
    return {name: str(form.get(name, "")) for name in names}


def new_form() -> JobForm:
    return JobForm({"mode": "http"})


def form_of(job: Job, unsaved: tuple[tuple[str, str], ...] = ()) -> JobForm:
    """The edit form holding the job's settings as they are."""
    return JobForm({"endpoint_url": job.endpoint_url, "queue": job.queue, "max_attempts": str(job.max_attempts),
                    "timeout": duration_text(job.timeout), "description": job.description}, unsaved=unsaved)


def is_worker(job: Job) -> bool:
    return job.execution_mode is ExecutionMode.WORKER


def edit_fields(job: Job) -> tuple[str, ...]:
    """The settings the edit form shows: where runs go (the endpoint, or a worker job's queue) and the rest."""
    return tuple(name for name in EDIT_FIELDS if name != ("endpoint_url" if is_worker(job) else "queue"))


def duration_text(value: timedelta | None) -> str:
    """A duration as the form shows it (and reads it back unchanged): 5m, 1h 30m, 1.5s, 250ms."""
    if value is None:
        return ""
    ms = round(value.total_seconds() * 1000)
    return f"{ms / 1000:g}s" if ms > 1000 and ms % 1000 else span(value)


def parse_duration(text: str) -> timedelta:
    """`90` (seconds), `1.5s`, `500ms`, `5m`, `2h`, `1d` or a sum such as `1h 30m`; ValueError otherwise."""
    compact = "".join(text.split())
    try:
        if _NUMBER.fullmatch(compact):
            return timedelta(seconds=float(compact))
        parts = _PART.findall(compact)
        if not parts or "".join(number + unit for number, unit in parts) != compact:
            raise ValueError(text)
        return sum((float(number) * _UNITS[unit] for number, unit in parts), timedelta(0))
    except OverflowError:  # more days than a timedelta holds: far out of any range the API accepts
        raise ValueError(text) from None


def _attempts(text: str, problems: dict[str, str]) -> int | None:
    """The max attempts typed; None (and a problem) when it is not a number the API could take."""
    compact = text.strip()
    if not compact:
        return DEFAULT_MAX_ATTEMPTS
    # 0 would be read by the API as "unset" (the default) rather than refused: say so here.
    if not compact.isascii() or not compact.isdigit() or not 1 <= int(compact) <= MAX_ATTEMPTS:
        problems["max_attempts"] = f"must be a whole number between 1 and {MAX_ATTEMPTS}"
        return None
    return int(compact)


def _timeout(text: str, problems: dict[str, str]) -> timedelta | None:
    if not text.strip():
        return DEFAULT_TIMEOUT
    try:
        return parse_duration(text)
    except ValueError:
        problems["timeout"] = "must be a duration such as 30s, 5m or 1h 30m"
        return None


def _proto_duration(value: timedelta) -> Duration:
    duration = Duration()
    duration.FromTimedelta(value)
    return duration


def create_request(values: Mapping[str, str]) -> tuple[job_pb2.Job, dict[str, str]]:
    """The job to create from the create form's values, and what the form itself must refuse. Empty optional
    fields are left to the API's defaults; of the endpoint and the queue, only the chosen mode's is sent."""
    problems: dict[str, str] = {}
    worker = values.get("mode") == "worker"
    job = job_pb2.Job(slug=values.get("slug", "").strip(), description=values.get("description", "").strip(),
                      execution_mode=job_pb2.EXECUTION_MODE_WORKER if worker else job_pb2.EXECUTION_MODE_HTTP)
    if worker:
        job.queue = values.get("queue", "").strip()
    else:
        job.endpoint_url = values.get("endpoint_url", "").strip()
    if values.get("max_attempts", "").strip():
        attempts = _attempts(values["max_attempts"], problems)
        if attempts is not None:
            job.max_attempts = attempts
    if values.get("timeout", "").strip():
        timeout = _timeout(values["timeout"], problems)
        if timeout is not None:
            job.timeout.CopyFrom(_proto_duration(timeout))
    return job, problems


def edit_request(values: Mapping[str, str], job: Job) -> Edit:
    """The settings of the edit form that differ from `job`'s, as a Job naming `job` and its update mask. An
    emptied field means the API's default."""
    problems: dict[str, str] = {}
    change = job_pb2.Job(id=job.id)
    mask: list[str] = []
    fields = edit_fields(job)
    if "endpoint_url" in fields:
        endpoint = values.get("endpoint_url", "").strip()
        if endpoint != job.endpoint_url:
            change.endpoint_url = endpoint
            mask.append("endpoint_url")
    if "queue" in fields:
        queue = values.get("queue", "").strip() or DEFAULT_QUEUE
        if queue != job.queue:
            change.queue = queue
            mask.append("queue")
    attempts = _attempts(values.get("max_attempts", ""), problems)
    if attempts is not None and attempts != job.max_attempts:
        change.max_attempts = attempts
        mask.append("max_attempts")
    timeout = _timeout(values.get("timeout", ""), problems)
    if timeout is not None and timeout != job.timeout:
        change.timeout.CopyFrom(_proto_duration(timeout))
        mask.append("timeout")
    description = values.get("description", "").strip()
    if description != job.description:
        change.description = description
        mask.append("description")
    return Edit(change, mask, problems)


def unsaved(values: Mapping[str, str], job: Job) -> tuple[tuple[str, str], ...]:
    """The values typed into the edit form that differ from `job`'s settings (label, value as typed)."""
    edit = edit_request(values, job)
    changed = set(edit.mask) | set(edit.problems)
    return tuple((LABELS[name], values.get(name, "").strip() or "(empty: the default)")
                 for name in edit_fields(job) if name in changed)


def refused(form: JobForm, err: StraitError, shown: Collection[str]) -> JobForm:
    """`form` with the API's objections: each violation of a field the form shows beside it, the others (and a
    refusal without violations) above the form."""
    problems = dict(form.problems)
    others: list[str] = []
    if isinstance(err, AlreadyExistsError) and "slug" in shown:
        problems["slug"] = TAKEN
    for path, description in err.field_violations:
        relative = path.removeprefix("job.")
        name = FORM_FIELD_OF.get(relative, relative)
        if name in shown:
            problems[name] = f"{problems[name]}; {description}" if name in problems else description
        else:
            others.append(f"{path}: {description}")
    problem = "; ".join(others) or ("" if problems else err.message)
    return replace(form, problems=problems, problem=problem)
