/**
 * The Strait API for TypeScript: typed clients (createStraitClient), the google.rpc error details of failed
 * calls (errorDetails), and every strait.v1 message, enum and service descriptor.
 */

export {
  DEFAULT_ADDRESS,
  type StraitClient,
  type StraitClientOptions,
  type TlsOptions,
  apiKeyInterceptor,
  baseUrl,
  createStraitClient,
  straitOptionsFromEnv,
} from "./client.js";
export { type StraitErrorDetails, errorDetails, errorReason, retryDelayMs } from "./errors.js";
export { Code, ConnectError } from "@connectrpc/connect";

export * from "./gen/google/rpc/error_details_pb.js";
export * from "./gen/strait/v1/circuit_pb.js";
export * from "./gen/strait/v1/event_pb.js";
export * from "./gen/strait/v1/job_pb.js";
export * from "./gen/strait/v1/project_pb.js";
export * from "./gen/strait/v1/run_context_pb.js";
export * from "./gen/strait/v1/run_pb.js";
export * from "./gen/strait/v1/schedule_pb.js";
export * from "./gen/strait/v1/worker_pb.js";
export * from "./gen/strait/v1/workflow_pb.js";
export * from "./gen/strait/v1/workflow_run_pb.js";
