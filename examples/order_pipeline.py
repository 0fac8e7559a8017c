"""A workflow with the Python client: fan-out, a condition on an output, an approval and a join
(docs/workflows.md).

Start `strait dev` and paste the two `export` lines it prints, start `python examples/echo_endpoint.py`, then
run `python examples/order_pipeline.py [ENDPOINT_URL]` (or set ORDER_PIPELINE_ENDPOINT; default
http://127.0.0.1:8000/, the echo endpoint, which answers {"echo": <its input>, "attempt": n}).
Safe to run again: the jobs and the workflow are created or reset.
"""

import os
import sys
from datetime import timedelta

from strait_client import AlreadyExistsError, ApprovalStep, Client, JobStep, Step, StepRunStatus

ENDPOINT = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("ORDER_PIPELINE_ENDPOINT", "http://127.0.0.1:8000/")
STEPS = [
    Step("fetch", job=JobStep(job_slug="order-fetch")),
    # Fan-out: three steps depend on fetch and run side by side.
    Step("bill", ["fetch"], job=JobStep(job_slug="order-bill"), input_template={"total": "{{ input.total }}"}),
    Step("mail", ["fetch"], job=JobStep(job_slug="order-mail")),
    # A condition on fetch's output: only big orders wait for a person's approval (skipped otherwise).
    Step("review", ["fetch"], approval=ApprovalStep(timeout=timedelta(days=2)),
         condition="steps.fetch.output.echo.total > 100"),
    # The join: runs once all three ended (a skipped parent does not hold it back).
    Step("ship", ["bill", "mail", "review"], job=JobStep(job_slug="order-ship")),
]


with Client.from_env() as client:  # STRAIT_ADDRESS and STRAIT_API_KEY
    for slug in ("order-fetch", "order-bill", "order-mail", "order-ship"):
        try:
            client.jobs.create(slug, ENDPOINT)
        except AlreadyExistsError:
            client.jobs.update(slug, endpoint_url=ENDPOINT)
    try:
        client.workflows.create("order-pipeline", STEPS)
    except AlreadyExistsError:
        client.workflows.update("order-pipeline", steps=STEPS)

    for total in (40, 250):
        run = client.workflows.trigger("order-pipeline", {"order": 7, "total": total})
        print("triggered", run.id, run.status)
        # Follow the run's events until it ends; approve the review once it waits for a decision.
        for event in client.workflow_runs.watch(run.id, timeout=60):
            if event.type == "step_status" and event.step_ref == "review" and event.to_status == StepRunStatus.WAITING:
                review = client.workflow_runs.approve(run.id, "review", comment="checked by the example")
                print("approved", review.step_ref, "by", review.output["approver"])
        run = client.workflow_runs.get(run.id)
        print(run.status, run.error)  # completed
        for step in client.workflow_runs.steps(run.id):
            print(f"  {step.step_ref:7} {step.status:10} {step.skip_reason or '':16} {step.output}")
        # total 40: review skipped (condition_false), ship still runs; total 250: review approved, every step
        # completes.
