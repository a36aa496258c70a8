/** Backoff schedules with AWS-style jitter drawn from Effect's `Random`. */
export * as Backoff from "./Backoff.js"
/** Deadline budgets that nested calls and retries spend from, carried in envelope headers. */
export * as Budget from "./Budget.js"
/** Classified retry policies, for any Effect and as handler middleware. */
export * as Retry from "./Retry.js"
