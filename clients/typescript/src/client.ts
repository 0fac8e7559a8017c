/**
 * createStraitClient: typed Connect-ES clients for every Strait service that takes an API key, over one
 * HTTP/2 connection speaking gRPC.
 */

import { type Client, type Interceptor, createClient } from "@connectrpc/connect";
import { Http2SessionManager, createGrpcTransport } from "@connectrpc/connect-node";
import type { SecureClientSessionOptions } from "node:http2";

import { EndpointCircuitService } from "./gen/strait/v1/circuit_pb.js";
import { EventService } from "./gen/strait/v1/event_pb.js";
import { JobService } from "./gen/strait/v1/job_pb.js";
import { ProjectService } from "./gen/strait/v1/project_pb.js";
import { RunService } from "./gen/strait/v1/run_pb.js";
import { ScheduleService } from "./gen/strait/v1/schedule_pb.js";
import { WorkerService } from "./gen/strait/v1/worker_pb.js";
import { WorkflowService } from "./gen/strait/v1/workflow_pb.js";
import { WorkflowRunService } from "./gen/strait/v1/workflow_run_pb.js";

export const DEFAULT_ADDRESS = "127.0.0.1:50051";

/** TLS settings for the connection; `true` means TLS with the system's trusted certificate authorities. */
export type TlsOptions = Pick<SecureClientSessionOptions, "ca" | "cert" | "key" | "servername">;

export interface StraitClientOptions {
  /** The server: "host:port" (plaintext unless `tls` is set), or a URL "http://host:port" / "https://host:port". */
  address: string;
  /** A project's API key ("strait_..."), or the admin key for ProjectService. Sent as `authorization: Bearer`. */
  apiKey: string;
  /** Connect over TLS. Off by default, as `strait serve` listens in plaintext (put TLS in front of it). */
  tls?: boolean | TlsOptions;
  /** More interceptors, run after the one that adds the API key. */
  interceptors?: Interceptor[];
}

export interface StraitClient {
  readonly jobs: Client<typeof JobService>;
  readonly runs: Client<typeof RunService>;
  readonly schedules: Client<typeof ScheduleService>;
  readonly workflows: Client<typeof WorkflowService>;
  readonly workflowRuns: Client<typeof WorkflowRunService>;
  readonly events: Client<typeof EventService>;
  readonly circuits: Client<typeof EndpointCircuitService>;
  readonly projects: Client<typeof ProjectService>;
  readonly workers: Client<typeof WorkerService>;
  /** Closes the connection; calls still open fail. Calls made afterwards open a new connection. */
  close(): void;
}

/** `{address, apiKey}` from STRAIT_ADDRESS (default 127.0.0.1:50051) and STRAIT_API_KEY, as the CLI reads them. */
export function straitOptionsFromEnv(env: NodeJS.ProcessEnv = process.env): StraitClientOptions {
  return { address: env["STRAIT_ADDRESS"] || DEFAULT_ADDRESS, apiKey: env["STRAIT_API_KEY"] ?? "" };
}

/** An interceptor that sends `apiKey` as `authorization: Bearer <apiKey>` on every call. */
export function apiKeyInterceptor(apiKey: string): Interceptor {
  if (!apiKey) {
    throw new Error("an API key is required (pass apiKey or set STRAIT_API_KEY)");
  }
  const value = `Bearer ${apiKey}`;
  return (next) => (request) => {
    request.header.set("authorization", value);
    return next(request);
  };
}

/** The base URL of `address`: its own scheme when it has one, else http or https as `tls` says. */
export function baseUrl(address: string, tls: boolean): string {
  const scheme = /^(https?):\/\//i.exec(address)?.[1]?.toLowerCase();
  if (scheme === undefined) {
    if (!address) {
      throw new Error("an address is required (host:port)");
    }
    return `${tls ? "https" : "http"}://${address}`;
  }
  if (tls && scheme === "http") {
    throw new Error(`address ${address} says http, but tls is set`);
  }
  return address;
}

/**
 * Clients for the Strait API at `options.address`, authenticated with `options.apiKey`.
 *
 * Calls have no deadline unless given one: pass `{ timeoutMs }` as a call's options (streams such as
 * `runs.watchRun` are meant to stay open). The connection sends HTTP/2 pings after 30 s without data, so a
 * dead connection fails open calls instead of leaving them waiting.
 */
export function createStraitClient(options: StraitClientOptions): StraitClient {
  const auth = apiKeyInterceptor(options.apiKey);
  const url = baseUrl(options.address, options.tls !== undefined && options.tls !== false);
  const nodeOptions = typeof options.tls === "object" ? options.tls : {};
  // The server refuses pings more often than every 10 s; 30 s stays well clear of that.
  const sessionManager = new Http2SessionManager(url, { pingIntervalMs: 30_000, pingTimeoutMs: 10_000 }, nodeOptions);
  const transport = createGrpcTransport({
    baseUrl: url,
    sessionManager,
    interceptors: [auth, ...(options.interceptors ?? [])],
  });
  return {
    jobs: createClient(JobService, transport),
    runs: createClient(RunService, transport),
    schedules: createClient(ScheduleService, transport),
    workflows: createClient(WorkflowService, transport),
    workflowRuns: createClient(WorkflowRunService, transport),
    events: createClient(EventService, transport),
    circuits: createClient(EndpointCircuitService, transport),
    projects: createClient(ProjectService, transport),
    workers: createClient(WorkerService, transport),
    close: () => sessionManager.abort(),
  };
}
