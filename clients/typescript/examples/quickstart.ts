/**
 * The README's walkthrough with the TypeScript client.
 *
 * Start `strait dev` and paste the two `export` lines it prints, start `python examples/echo_endpoint.py`
 * (from the repository root), then in clients/typescript: `npm ci && npm run quickstart`.
 * Safe to run again: the job is created, or reset to these settings when it exists.
 */

import {
  Code,
  ConnectError,
  type Job,
  RunStatus,
  type StraitClient,
  createStraitClient,
  errorDetails,
  straitOptionsFromEnv,
} from "../src/index.js";

const ENDPOINT = "http://127.0.0.1:8000/";

async function ensureJob(client: StraitClient, slug: string, endpointUrl: string): Promise<Job> {
  try {
    const { job } = await client.jobs.createJob({ job: { slug, endpointUrl } });
    return job!;
  } catch (err) {
    if (!(err instanceof ConnectError && err.code === Code.AlreadyExists)) throw err;
    const { job } = await client.jobs.updateJob({ job: { slug, endpointUrl }, updateMask: { paths: ["endpoint_url"] } });
    return job!;
  }
}

const client = createStraitClient(straitOptionsFromEnv()); // STRAIT_ADDRESS and STRAIT_API_KEY
try {
  // 1. Trigger a job and follow its run as it happens: WatchRun streams the run's events (stored ones,
  //    then live ones) and ends when the run does.
  await ensureJob(client, "hello", ENDPOINT);
  const { run } = await client.jobs.triggerJob({
    selector: { case: "slug", value: "hello" },
    options: { payloadJson: JSON.stringify({ name: "world" }) },
  });
  console.log("triggered", run!.id, RunStatus[run!.status]);
  for await (const { message } of client.runs.watchRun({ runId: run!.id })) {
    if (message.case === "event") {
      console.log(`  ${message.value.sequence}: ${message.value.type} -> ${RunStatus[message.value.toStatus]}`);
    }
  }
  const { run: done } = await client.runs.getRun({ id: run!.id }, { timeoutMs: 10_000 });
  console.log(RunStatus[done!.status], JSON.parse(done!.outputJson));

  // 2. A request the server refuses: the error's details say which fields are wrong, and why.
  try {
    await client.jobs.createJob({ job: { slug: "Not A Slug", endpointUrl: "ftp://example.com/" } });
  } catch (err) {
    const { errorInfo, badRequest } = errorDetails(err);
    console.log(err instanceof ConnectError ? Code[err.code] : err, errorInfo?.reason);
    for (const violation of badRequest?.fieldViolations ?? []) {
      console.log(`  ${violation.field}: ${violation.description}`);
    }
  }
} finally {
  client.close();
}
