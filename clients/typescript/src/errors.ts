/**
 * errorDetails: the google.rpc details a failed call carries (the server sends them in the
 * grpc-status-details-bin trailer; Connect-ES decodes that into ConnectError.details).
 */

import type { DescMessage, MessageShape } from "@bufbuild/protobuf";
import { durationMs } from "@bufbuild/protobuf/wkt";
import { ConnectError } from "@connectrpc/connect";

import {
  type BadRequest,
  BadRequestSchema,
  type ErrorInfo,
  ErrorInfoSchema,
  type PreconditionFailure,
  PreconditionFailureSchema,
  type QuotaFailure,
  QuotaFailureSchema,
  type RequestInfo,
  RequestInfoSchema,
  type ResourceInfo,
  ResourceInfoSchema,
  type RetryInfo,
  RetryInfoSchema,
} from "./gen/google/rpc/error_details_pb.js";

/** Each detail type the server attaches, when the error carries it (at most one of each). */
export interface StraitErrorDetails {
  /** Always present on errors from Strait: `reason` (e.g. "RUN_NOT_FOUND") and `domain` ("strait.dev"). */
  errorInfo?: ErrorInfo;
  /** INVALID_ARGUMENT: one `fieldViolations` entry per bad field, named by its path ("job.retry_policy"). */
  badRequest?: BadRequest;
  /** NOT_FOUND and ALREADY_EXISTS: which resource (`resourceType` "run", `resourceName` "run_..."). */
  resourceInfo?: ResourceInfo;
  /** FAILED_PRECONDITION: what state stood in the way (`type` "RUN_STATUS", `subject` the run id). */
  preconditionFailure?: PreconditionFailure;
  /** RESOURCE_EXHAUSTED on quotas: whose quota (`subject` "api_key:key_..."). */
  quotaFailure?: QuotaFailure;
  /** RESOURCE_EXHAUSTED and UNAVAILABLE: how long to wait before trying again (`retryDelay`). */
  retryInfo?: RetryInfo;
  /** INTERNAL: the id under which the server logged the failure; quote it when reporting a problem. */
  requestInfo?: RequestInfo;
}

function first<Desc extends DescMessage>(err: ConnectError, desc: Desc): MessageShape<Desc> | undefined {
  return err.findDetails(desc)[0];
}

/**
 * The google.rpc details of a failed call. Takes whatever a call threw: anything that is not a ConnectError
 * (or a ConnectError without details, such as one for a connection that failed) gives `{}`.
 */
export function errorDetails(err: unknown): StraitErrorDetails {
  if (!(err instanceof ConnectError)) {
    return {};
  }
  const found: StraitErrorDetails = {
    errorInfo: first(err, ErrorInfoSchema),
    badRequest: first(err, BadRequestSchema),
    resourceInfo: first(err, ResourceInfoSchema),
    preconditionFailure: first(err, PreconditionFailureSchema),
    quotaFailure: first(err, QuotaFailureSchema),
    retryInfo: first(err, RetryInfoSchema),
    requestInfo: first(err, RequestInfoSchema),
  };
  // Only the details the error has, so that `"badRequest" in details` and printing the object tell the truth.
  return Object.fromEntries(Object.entries(found).filter(([, detail]) => detail !== undefined));
}

/** The error's ErrorInfo reason ("RUN_NOT_FOUND", "RATE_LIMITED", ...); "" when it carries none. */
export function errorReason(err: unknown): string {
  return errorDetails(err).errorInfo?.reason ?? "";
}

/** How long the server asks to wait before retrying (its RetryInfo), in milliseconds; undefined without one. */
export function retryDelayMs(err: unknown): number | undefined {
  const delay = errorDetails(err).retryInfo?.retryDelay;
  return delay === undefined ? undefined : durationMs(delay);
}
