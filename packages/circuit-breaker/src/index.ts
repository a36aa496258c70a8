/** Circuit breakers: windows, trip rules, half-open probes, manual control, transitions and metrics. */
export * as Breaker from "./Breaker.js"
/** The port through which breakers share state across instances, with its memory driver. */
export * as BreakerStateStore from "./BreakerStateStore.js"
/** One breaker per downstream key, created on demand with shared configuration. */
export * as Registry from "./Registry.js"
