/** Bulkheads: bounded concurrency and a bounded wait queue per key, with typed rejection. */
export * as Bulkhead from "./Bulkhead.js"
/** Typed fallbacks: which failures, what value. */
export * as Fallback from "./Fallback.js"
/** Hedged calls: the first success wins, losers are interrupted, hedges spend from a retry budget. */
export * as Hedge from "./Hedge.js"
/** Token-bucket and sliding-window rate limiters, keyed, local or shared over a store. */
export * as RateLimiter from "./RateLimiter.js"
/** The store port rate limiters share their state through, and its in-process driver. */
export * as RateLimiterStore from "./RateLimiterStore.js"
/** Retry budgets that retries and hedges spend from together. */
export * as RetryBudget from "./RetryBudget.js"
