"""A console page left open: does it keep up, and does its memory stay flat?

    python bench/bench_console_live.py [--minutes 60] [--rate 20] [--sample 60]

Starts `strait serve --mode all` with the console on a free port against a fresh database, with a local HTTP
endpoint answering 200, and opens the live runs list and the live workflow runs list in headless Chromium (the
machine's, as the console tests use). Then triggers --rate runs a second (and one workflow run of a one-step
workflow a second) for --minutes. Every --sample seconds it triggers a marker run and a marker workflow run and
times how long each takes to show on its page (the pages keep up), and prints, per page, its table rows, its
DOM nodes and its JavaScript heap after a garbage collection, with the server's resident memory and the
machine's load average. Flat columns after the first samples mean an open page does not grow.

Same environment variables as bench_dispatch.py.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from playwright.async_api import Page, async_playwright

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_console import console_server
from bench.bench_dispatch import _load, _setup
from strait_client.v1 import job_pb2, workflow_pb2, workflow_pb2_grpc
from tests.console.browser import chromium_path, sign_in

Metadata = tuple[tuple[str, str], ...]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def page_figures(page: Page, rows: str) -> tuple[int, int, float]:
    """(table rows, DOM nodes, JS heap MiB after a garbage collection)."""
    cdp = await page.context.new_cdp_session(page)
    try:
        await cdp.send("HeapProfiler.collectGarbage")
        await cdp.send("Performance.enable")
        metrics = {m["name"]: m["value"] for m in (await cdp.send("Performance.getMetrics"))["metrics"]}
    finally:
        await cdp.detach()
    count = await page.locator(rows).count()
    return count, int(metrics.get("Nodes", 0)), metrics.get("JSHeapUsedSize", 0) / 2**20


async def shown_after(page: Page, selector: str, trigger: Any) -> float:
    """Seconds from calling `trigger` (which returns the new row's id) until its row is on the page."""
    start = time.perf_counter()
    row_id = await trigger()
    await page.locator(selector.format(row_id)).wait_for(timeout=60_000)
    return time.perf_counter() - start


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--rate", type=float, default=20.0, help="runs triggered a second")
    parser.add_argument("--sample", type=float, default=60.0, help="seconds between samples")
    args = parser.parse_args()
    async with console_server() as (channel, server, sink, base, admin_key):
        jobs, md, noop = await _setup(channel, admin_key, f"http://127.0.0.1:{sink.port}/run")
        flows = workflow_pb2_grpc.WorkflowServiceStub(channel)
        await flows.CreateWorkflow(workflow_pb2.CreateWorkflowRequest(workflow=workflow_pb2.Workflow(
            slug="flow", steps=[workflow_pb2.Step(ref="only", job=workflow_pb2.JobStep(job_slug="noop"))])),
            metadata=md)

        async def run() -> str:
            return str((await jobs.TriggerJob(job_pb2.TriggerJobRequest(id=noop.id), metadata=md)).run.id)

        async def workflow_run() -> str:
            reply = await flows.TriggerWorkflow(workflow_pb2.TriggerWorkflowRequest(slug="flow", input_json="{}"),
                                                metadata=md)
            return str(reply.workflow_run.id)

        async def load(stop: asyncio.Event) -> int:
            sent, start = 0, time.perf_counter()
            while not stop.is_set():
                due = int((time.perf_counter() - start) * args.rate) - sent
                for _ in range(due):
                    await run()
                if due and sent // int(args.rate) != (sent + due) // int(args.rate):
                    await workflow_run()  # one a second
                sent += due
                await asyncio.sleep(0.05)
            return sent

        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
            context = await browser.new_context()
            runs_page = await context.new_page()
            await sign_in(runs_page, base, md[0][1].removeprefix("Bearer "))
            await runs_page.goto(base + "/runs")
            flows_page = await context.new_page()
            await flows_page.goto(base + "/workflow-runs")
            print(f"strait console live bench: {args.rate:g} runs/s and 1 workflow run/s for {args.minutes:g} "
                  f"min, {_load()}")
            print(f"{'min':>5} {'runs':>8} | {'rows':>5} {'nodes':>6} {'heap MiB':>8} {'shown s':>7} | "
                  f"{'wf rows':>7} {'nodes':>6} {'heap MiB':>8} {'shown s':>7} | {'server RSS MiB':>14}  load")
            stop = asyncio.Event()
            loader = asyncio.create_task(load(stop))
            start = time.perf_counter()
            samples: list[dict[str, float]] = []
            while True:
                runs_lag = await shown_after(runs_page, "#run-{}", run)
                flows_lag = await shown_after(flows_page, "#workflow-run-{}", workflow_run)
                r = await page_figures(runs_page, "#run-rows tr")
                w = await page_figures(flows_page, "#workflow-run-rows tr")
                minute = (time.perf_counter() - start) / 60
                sample = {"minute": minute, "runs": sink.count, "runs_rows": r[0], "runs_nodes": r[1],
                          "runs_heap": r[2], "runs_lag": runs_lag, "wf_rows": w[0], "wf_nodes": w[1],
                          "wf_heap": w[2], "wf_lag": flows_lag, "rss": rss_mib(server.pid)}
                samples.append(sample)
                print(f"{minute:5.1f} {sink.count:8,} | {r[0]:5} {r[1]:6} {r[2]:8.2f} {runs_lag:7.2f} | "
                      f"{w[0]:7} {w[1]:6} {w[2]:8.2f} {flows_lag:7.2f} | {sample['rss']:14.1f}  "
                      f"{_load().split(' (')[0].removeprefix('load average ')}", flush=True)
                if minute >= args.minutes:
                    break
                await asyncio.sleep(max(0.0, args.sample - (time.perf_counter() - start) % args.sample))
            stop.set()
            await loader
            await browser.close()
        print(json.dumps({"first": samples[min(1, len(samples) - 1)], "last": samples[-1]}))
        print(f"after: {_load()}")


if __name__ == "__main__":
    asyncio.run(main())
