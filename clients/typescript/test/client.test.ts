/**
 * The TypeScript client against a real `strait serve`: a run triggered and watched to completion, and the
 * google.rpc details of refused calls decoded with errorDetails.
 */

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import {
  Code,
  ConnectError,
  RunStatus,
  type RunEvent,
  type StraitClient,
  createStraitClient,
  errorDetails,
  errorReason,
  retryDelayMs,
} from "../src/index.js";
import { EchoEndpoint, serverFromEnv, uniqueSlug } from "./support.js";

const server = serverFromEnv();
// A deadline for each call, so that a server that stops answering fails the test instead of hanging it.
const CALL = { timeoutMs: 15_000 };

/** The error `call` rejects with; fails when it resolves. */
async function refusal(call: Promise<unknown>): Promise<ConnectError> {
  try {
    await call;
  } catch (err) {
    assert.ok(err instanceof ConnectError, `expected a ConnectError, got ${String(err)}`);
    return err;
  }
  assert.fail("the call succeeded");
}

describe("a Strait server", () => {
  let client: StraitClient;
  let endpoint: EchoEndpoint;

  before(async () => {
    client = createStraitClient({ address: server.address, apiKey: server.apiKey });
    endpoint = await EchoEndpoint.start();
  });

  after(async () => {
    client.close();
    await endpoint.stop();
  });

  async function runToCompletion(payload: object): Promise<{ runId: string; events: RunEvent[] }> {
    const slug = uniqueSlug("ts-hello");
    await client.jobs.createJob({ job: { slug, endpointUrl: endpoint.url } }, CALL);
    const { run } = await client.jobs.triggerJob(
      { selector: { case: "slug", value: slug }, options: { payloadJson: JSON.stringify(payload) } },
      CALL,
    );
    assert.ok(run);
    const events: RunEvent[] = [];
    // The stream sends the stored events, then live ones, and ends after the run's final event.
    for await (const response of client.runs.watchRun({ runId: run.id }, { timeoutMs: 30_000 })) {
      if (response.message.case === "event") events.push(response.message.value);
    }
    return { runId: run.id, events };
  }

  test("runs a triggered job and streams its events until it completes", async () => {
    const { runId, events } = await runToCompletion({ name: "typescript" });

    assert.deepEqual(
      events.map((e) => e.sequence),
      events.map((_, i) => BigInt(i + 1)),
      "events arrive in order, none missing",
    );
    assert.ok(events.every((e) => e.runId === runId));
    const changes = events.filter((e) => e.type === "status_change").map((e) => e.toStatus);
    assert.equal(changes.at(-1), RunStatus.COMPLETED);
    assert.ok(changes.includes(RunStatus.EXECUTING));

    const delivered = endpoint.deliveries.find((d) => d.headers["x-run-id"] === runId);
    assert.ok(delivered, "the endpoint was called for the run");
    assert.deepEqual(delivered.body, { name: "typescript" });
    const { run } = await client.runs.getRun({ id: runId }, CALL);
    assert.equal(run?.status, RunStatus.COMPLETED);
    assert.deepEqual(JSON.parse(run?.outputJson ?? ""), { echo: { name: "typescript" } });
  });

  test("refuses an invalid job with INVALID_ARGUMENT and a BadRequest naming each bad field", async () => {
    const err = await refusal(
      client.jobs.createJob({ job: { slug: "Not A Slug!", endpointUrl: "ftp://example.com/" } }, CALL),
    );

    assert.equal(err.code, Code.InvalidArgument);
    const details = errorDetails(err);
    assert.equal(details.errorInfo?.reason, "INVALID_ARGUMENT");
    assert.equal(details.errorInfo?.domain, "strait.dev");
    const fields = (details.badRequest?.fieldViolations ?? []).map((v) => v.field);
    assert.deepEqual(new Set(fields), new Set(["job.slug", "job.endpoint_url"]));
    assert.ok(details.badRequest?.fieldViolations.every((v) => v.description.length > 0));
  });

  test("names the missing resource of a NOT_FOUND in its ResourceInfo", async () => {
    const err = await refusal(client.runs.getRun({ id: "run_nope" }, CALL));

    assert.equal(err.code, Code.NotFound);
    assert.equal(errorReason(err), "RUN_NOT_FOUND");
    const { resourceInfo } = errorDetails(err);
    assert.equal(resourceInfo?.resourceType, "run");
    assert.equal(resourceInfo?.resourceName, "run_nope");
  });

  test("explains a FAILED_PRECONDITION with a PreconditionFailure on the run", async () => {
    const { runId } = await runToCompletion({});
    const err = await refusal(client.runs.cancelRun({ id: runId }, CALL));

    assert.equal(err.code, Code.FailedPrecondition);
    const violations = errorDetails(err).preconditionFailure?.violations ?? [];
    assert.deepEqual(
      violations.map((v) => [v.type, v.subject]),
      [["RUN_STATUS", runId]],
    );
  });

  test("answers a call over its key's rate limit with RESOURCE_EXHAUSTED, a QuotaFailure and a RetryInfo", async () => {
    const { job } = await client.jobs.createJob({ job: { slug: uniqueSlug("ts-quota"), endpointUrl: endpoint.url } }, CALL);
    const admin = createStraitClient({ address: server.address, apiKey: server.adminKey });
    const { apiKey, secret } = await admin.projects.createApiKey(
      { projectId: job!.projectId, name: "ts-limited", apiRateLimit: { requests: 1, window: { seconds: 60n } } },
      CALL,
    );
    admin.close();
    const limited = createStraitClient({ address: server.address, apiKey: secret });
    try {
      await limited.jobs.listJobs({}, CALL);
      const err = await refusal(limited.jobs.listJobs({}, CALL));

      assert.equal(err.code, Code.ResourceExhausted);
      assert.equal(errorReason(err), "RATE_LIMITED");
      assert.deepEqual(
        errorDetails(err).quotaFailure?.violations.map((v) => v.subject),
        [`api_key:${apiKey!.id}`],
      );
      const delay = retryDelayMs(err);
      assert.ok(delay !== undefined && delay > 0 && delay <= 60_000, `retry delay ${delay} ms`);
    } finally {
      limited.close();
    }
  });

  test("refuses an unknown API key with UNAUTHENTICATED", async () => {
    const stranger = createStraitClient({ address: server.address, apiKey: "strait_not_a_real_key" });
    try {
      const err = await refusal(stranger.jobs.listJobs({}, CALL));
      assert.equal(err.code, Code.Unauthenticated);
      assert.equal(errorReason(err), "UNAUTHENTICATED");
    } finally {
      stranger.close();
    }
  });
});

describe("createStraitClient", () => {
  test("needs an API key", () => {
    assert.throws(() => createStraitClient({ address: "127.0.0.1:50051", apiKey: "" }), /API key is required/);
  });

  test("errorDetails of something that is not a ConnectError is empty", () => {
    assert.deepEqual(errorDetails(new Error("boom")), {});
    assert.equal(retryDelayMs(undefined), undefined);
  });
});
