"""The console's job forms read what was typed: durations as people write them, and an edit's update mask naming
exactly the settings that changed (an untouched setting is never rewritten from the form's text)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from google.protobuf.duration_pb2 import Duration

from strait_client._models import Job
from strait_client.v1 import job_pb2
from strait_server.console import job_form


@pytest.mark.parametrize(("text", "value"), [
    ("90", timedelta(seconds=90)), ("1.5s", timedelta(seconds=1.5)), ("250ms", timedelta(milliseconds=250)),
    ("5m", timedelta(minutes=5)), ("1h 30m", timedelta(minutes=90)), (" 2d ", timedelta(days=2)),
])
def test_durations_are_read_as_people_write_them(text: str, value: timedelta) -> None:
    assert job_form.parse_duration(text) == value


@pytest.mark.parametrize("text", ["soon", "5 minutes", "m5", "1h30", "-5s", "1" * 400])
def test_what_is_not_a_duration_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        job_form.parse_duration(text)


@pytest.mark.parametrize("value", [timedelta(seconds=1.5), timedelta(minutes=90), timedelta(hours=24),
                                   timedelta(milliseconds=250), timedelta(seconds=61)])
def test_a_duration_shown_in_the_form_reads_back_unchanged(value: timedelta) -> None:
    assert job_form.parse_duration(job_form.duration_text(value)) == value


def _job() -> Job:
    return Job.from_proto(job_pb2.Job(id="job_1", slug="report", endpoint_url="http://example.com/a",
                                      max_attempts=2, timeout=Duration(seconds=90), description="Weekly",
                                      execution_mode=job_pb2.EXECUTION_MODE_HTTP))


def test_an_edit_names_only_the_settings_whose_values_changed() -> None:
    job = _job()
    shown = job_form.form_of(job).values
    assert job_form.edit_request(shown, job).mask == []
    # The same values written differently are no change.
    assert job_form.edit_request({**shown, "timeout": "90", "max_attempts": " 2 "}, job).mask == []
    edit = job_form.edit_request({**shown, "endpoint_url": "http://example.com/b", "description": ""}, job)
    assert edit.mask == ["endpoint_url", "description"]
    assert (edit.job.id, edit.job.endpoint_url, edit.job.description) == ("job_1", "http://example.com/b", "")
    # An emptied field is the default, a change only when the job's value is another.
    assert job_form.edit_request({**shown, "max_attempts": "", "timeout": ""}, job).mask == [
        "max_attempts", "timeout"]
