"""The README's workflow walkthrough, run as written: each grpcurl call's JSON body is sent to the method it
names on a real server (the run id filled in from the trigger's answer)."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

from google.protobuf import json_format, symbol_database

from strait_client.v1 import event_pb2, workflow_pb2, workflow_run_pb2  # noqa: F401 (registers the services)
from tests.conftest import Api
from tests.integration.test_workflow_runs import Flows
from tests.sink import Reply, Sink

README = Path(__file__).resolve().parents[2] / "README.md"


def walkthrough_calls() -> list[tuple[str, str]]:
    """(method path, JSON body) of the grpcurl calls in the README's workflow walkthrough, in order."""
    text = README.read_text()
    block = text[text.index("A walkthrough against `strait dev`"):]
    block = block[block.index("```sh") + 5:block.index("```", block.index("```sh") + 5)]
    joined = re.sub(r"\\\n\s*", " ", block)  # continued lines
    joined = re.sub(r" {2,}#[^\n]*", "", joined)  # comments after a command
    calls = []
    for command in joined.split("grpcurl ")[1:]:
        words = shlex.split(command.replace('"$H"', "H").replace("$STRAIT_ADDRESS", "ADDRESS"))
        calls.append((words[-1], words[words.index("-d") + 1]))
    return calls


async def test_the_readme_walkthrough_runs_as_written(api: Api, sink: Sink) -> None:
    flows = Flows(api, sink)
    await flows.api.create_job("charge", sink.script("/charge", then=Reply(body='{"receipt": "r-7"}')))
    pool = symbol_database.Default().pool
    run_id = ""
    for method, body in walkthrough_calls():
        service_name, method_name = method.rsplit("/", 1)
        descriptor = pool.FindServiceByName(service_name).FindMethodByName(method_name)
        request_class = symbol_database.Default().GetSymbol(descriptor.input_type.full_name)
        response_class = symbol_database.Default().GetSymbol(descriptor.output_type.full_name)
        request = json_format.Parse(body.replace("wfr_...", run_id), request_class())
        path = f"/{service_name}/{method_name}"
        if descriptor.server_streaming:
            stream = api.channel.unary_stream(path, request_serializer=request_class.SerializeToString,
                                              response_deserializer=response_class.FromString)
            events = [m.event async for m in stream(request, metadata=api.metadata) if m.HasField("event")]
            assert events[-1].to_status == "completed"
            continue
        call = api.channel.unary_unary(path, request_serializer=request_class.SerializeToString,
                                       response_deserializer=response_class.FromString)
        if method_name == "ApproveStep":  # the walkthrough approves once the step waits
            await flows.wait_step(run_id, "review", workflow_run_pb2.STEP_RUN_STATUS_WAITING)
        if method_name == "SendEvent":
            await flows.wait_step(run_id, "paid", workflow_run_pb2.STEP_RUN_STATUS_WAITING)
        response = await call(request, metadata=api.metadata)
        if method_name == "TriggerWorkflow":
            run_id = response.workflow_run.id
        if method_name == "SendEvent":
            assert response.matched_steps == 1
    steps = await flows.steps(run_id)
    assert json.loads(steps["paid"].output_json) == {"amount": 250}
    assert [(s, steps[s].status) for s in steps] == [(s, workflow_run_pb2.STEP_RUN_STATUS_COMPLETED) for s in steps]
