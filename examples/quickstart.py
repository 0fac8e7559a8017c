"""The README's walkthrough with the Python client.

Start `strait dev` and paste the two `export` lines it prints, start `python examples/echo_endpoint.py`,
then run `python examples/quickstart.py [ENDPOINT]` (default http://127.0.0.1:8000/). Safe to run again: the
jobs are created or reset, and so is the circuit breaker of the failing endpoint.
"""

import sys
from datetime import timedelta

from strait_client import AlreadyExistsError, Client, Job

ENDPOINT = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8000/"


def ensure_job(client: Client, slug: str, endpoint_url: str, **fields: object) -> Job:
    """Creates the job, or resets it to these settings when it exists from an earlier run."""
    try:
        return client.jobs.create(slug, endpoint_url, **fields)
    except AlreadyExistsError:
        return client.jobs.update(slug, endpoint_url=endpoint_url, **fields)


with Client.from_env() as client:  # STRAIT_ADDRESS and STRAIT_API_KEY
    # 1. A job that works: trigger it, wait for the run, read the endpoint's answer.
    ensure_job(client, "hello", ENDPOINT)
    run = client.jobs.trigger("hello", {"name": "world"})
    print("triggered", run.id, run.status)
    run = client.runs.wait(run.id)
    print(run.status, run.output)  # completed {'echo': {'name': 'world'}, 'attempt': 1}

    # 2. A job whose endpoint answers 503: retried with exponential backoff, then parked in dead_letter.
    ensure_job(client, "flaky", ENDPOINT + "fail", max_attempts=3,
               retry_policy={"initial_delay": timedelta(milliseconds=500)})
    # Failures add up across runs of this script: after 5 in a row the endpoint's circuit would open and
    # hold the next run back for a minute (docs/flow-control.md#circuit-breakers). Start from a closed one.
    client.circuits.reset(ENDPOINT + "fail")
    run = client.jobs.trigger("flaky", {"order": 42})
    run = client.runs.wait(run.id)
    print(run.status, run.error, [(a.attempt, a.status_code) for a in run.attempts])
    # dead_letter endpoint returned 503 [(1, 503), (2, 503), (3, 503)]
    for event in client.runs.events(run.id):
        print(f"  {event.sequence}: {event.from_status or '(new)'} -> {event.to_status} {event.message}")

    # 3. Fix the endpoint and replay: a new run with the same payload, linked to the dead one.
    client.jobs.update("flaky", endpoint_url=ENDPOINT)
    replay = client.runs.replay(run.id)
    replay = client.runs.wait(replay.id)
    print(replay.status, "replay of", replay.replay_of_run_id, replay.output)
    # completed replay of run_... {'echo': {'order': 42}, 'attempt': 1}
