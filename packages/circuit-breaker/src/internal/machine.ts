/**
 * The breaker's state machine as plain functions over a JSON-serialisable snapshot, so the same logic runs
 * on in-process state, on a shared memory store and on a snapshot fetched from Redis. Functions mutate the
 * snapshot they are given: callers hand them either their own state (synchronously, hence atomically) or a
 * freshly fetched copy inside a compare-and-set loop.
 */

/** A breaker's state. */
export type State = "closed" | "open" | "half-open" | "isolated" | "disabled"

/** The rolling window's aggregate, per window kind. */
export type WindowSnapshot =
  | { readonly kind: "consecutive"; failures: number }
  | {
    readonly kind: "count"
    /** Ring of outcome codes: bit 0 failure, bit 1 slow. */
    outcomes: Array<number>
    next: number
    calls: number
    failures: number
    slow: number
  }
  | {
    readonly kind: "time"
    /** One bucket per second of the window, indexed by epoch-second modulo the window length. */
    buckets: Array<{ epoch: number; calls: number; failures: number; slow: number }>
    /** The latest epoch-second seen; buckets older than the window are cleared when it advances. */
    epoch: number
    calls: number
    failures: number
    slow: number
  }

/** Everything a breaker knows, as plain data (what `toJSON` exports and stores persist). */
export interface Snapshot {
  state: State
  /** When the breaker last opened (epoch millis). */
  openedAt: number
  /** When an open breaker admits its first probe (epoch millis). */
  openUntil: number
  /** Consecutive openings without a close in between; drives the open-duration backoff. */
  opens: number
  window: WindowSnapshot
  probes: { admitted: number; successes: number; failures: number }
  /** Bumped on every change; stores use it for compare-and-set. */
  version: number
}

/** The window's shape in the configuration. */
export type WindowConfig =
  | { readonly kind: "consecutive"; readonly threshold: number }
  | { readonly kind: "count"; readonly size: number }
  | { readonly kind: "time"; readonly seconds: number }

/** A resolved configuration the machine runs on. */
export interface Config {
  readonly window: WindowConfig
  readonly failureRateThreshold: number
  readonly slowCallRateThreshold: number
  readonly slowCallMillis: number | undefined
  readonly minimumCalls: number
  readonly openMillis: (opens: number) => number
  readonly permittedProbes: number
  readonly probeSuccessRatio: number
}

/** What an admission decided. */
export type Admission =
  | { readonly _tag: "call" }
  | { readonly _tag: "probe" }
  | { readonly _tag: "pass" }
  | { readonly _tag: "reject"; readonly state: "open" | "half-open" | "isolated"; readonly closesAt: number | undefined }

/** The admission of every call made while closed (shared: admissions carry no per-call data). */
export const call: Admission = { _tag: "call" }
const probe: Admission = { _tag: "probe" }
const pass: Admission = { _tag: "pass" }

/** The outcome of one admitted call. */
export type Outcome = "success" | "failure" | "ignored"

/** A fresh window for the configuration. */
export const emptyWindow = (config: WindowConfig): WindowSnapshot => {
  switch (config.kind) {
    case "consecutive":
      return { kind: "consecutive", failures: 0 }
    case "count":
      return { kind: "count", outcomes: [], next: 0, calls: 0, failures: 0, slow: 0 }
    case "time":
      return {
        kind: "time",
        buckets: Array.from({ length: config.seconds }, () => ({ epoch: -1, calls: 0, failures: 0, slow: 0 })),
        epoch: -1,
        calls: 0,
        failures: 0,
        slow: 0
      }
  }
}

/** A closed breaker with an empty window. */
export const initial = (config: Config): Snapshot => ({
  state: "closed",
  openedAt: 0,
  openUntil: 0,
  opens: 0,
  window: emptyWindow(config.window),
  probes: { admitted: 0, successes: 0, failures: 0 },
  version: 0
})

const advanceTime = (w: Extract<WindowSnapshot, { kind: "time" }>, epoch: number) => {
  if (epoch <= w.epoch) return
  const size = w.buckets.length
  // Clear every bucket that has fallen out of the window: at most one full turn of the ring.
  const from = w.epoch < 0 ? epoch - size + 1 : Math.max(w.epoch + 1, epoch - size + 1)
  for (let e = from; e <= epoch; e++) {
    const bucket = w.buckets[((e % size) + size) % size]!
    w.calls -= bucket.calls
    w.failures -= bucket.failures
    w.slow -= bucket.slow
    bucket.epoch = e
    bucket.calls = 0
    bucket.failures = 0
    bucket.slow = 0
  }
  w.epoch = epoch
}

/** Adds one outcome to the window (mutating it). */
export const recordInWindow = (
  w: WindowSnapshot,
  config: WindowConfig,
  now: number,
  failure: boolean,
  slow: boolean
): void => {
  switch (w.kind) {
    case "consecutive":
      w.failures = failure ? w.failures + 1 : 0
      return
    case "count": {
      const size = (config as Extract<WindowConfig, { kind: "count" }>).size
      const code = (failure ? 1 : 0) | (slow ? 2 : 0)
      if (w.outcomes.length < size) {
        w.outcomes.push(code)
        w.calls++
      } else {
        const evicted = w.outcomes[w.next]!
        if (evicted & 1) w.failures--
        if (evicted & 2) w.slow--
        w.outcomes[w.next] = code
      }
      w.next = (w.next + 1) % size
      if (failure) w.failures++
      if (slow) w.slow++
      return
    }
    case "time": {
      const epoch = Math.floor(now / 1000)
      advanceTime(w, epoch)
      if (epoch < w.epoch - w.buckets.length + 1) return // too old to count (a clock step backwards)
      const size = w.buckets.length
      const bucket = w.buckets[((epoch % size) + size) % size]!
      bucket.calls++
      w.calls++
      if (failure) {
        bucket.failures++
        w.failures++
      }
      if (slow) {
        bucket.slow++
        w.slow++
      }
      return
    }
  }
}

/** The window's aggregate as of `now`: calls, failures and slow calls it still counts. */
export const aggregate = (w: WindowSnapshot, now: number): { calls: number; failures: number; slow: number } => {
  switch (w.kind) {
    case "consecutive":
      return { calls: w.failures, failures: w.failures, slow: 0 }
    case "count":
      return { calls: w.calls, failures: w.failures, slow: w.slow }
    case "time":
      advanceTime(w, Math.floor(now / 1000))
      return { calls: w.calls, failures: w.failures, slow: w.slow }
  }
}

/** Whether the window's contents call for opening the breaker. */
export const shouldTrip = (config: Config, w: WindowSnapshot, now: number): boolean => {
  if (w.kind === "consecutive") {
    return w.failures >= (config.window as Extract<WindowConfig, { kind: "consecutive" }>).threshold
  }
  const { calls, failures, slow } = aggregate(w, now)
  if (calls === 0 || calls < config.minimumCalls) return false
  if (failures / calls >= config.failureRateThreshold) return true
  return config.slowCallMillis !== undefined && slow / calls >= config.slowCallRateThreshold
}

const open = (s: Snapshot, config: Config, now: number) => {
  s.state = "open"
  s.opens++
  s.openedAt = now
  s.openUntil = now + Math.max(0, config.openMillis(s.opens))
  s.probes = { admitted: 0, successes: 0, failures: 0 }
}

const close = (s: Snapshot, config: Config) => {
  s.state = "closed"
  s.opens = 0
  s.window = emptyWindow(config.window)
  s.probes = { admitted: 0, successes: 0, failures: 0 }
}

/** Asks to make one call; an open breaker whose open time has passed turns half-open here. */
export const acquire = (s: Snapshot, config: Config, now: number): Admission => {
  switch (s.state) {
    case "closed":
      return call
    case "disabled":
      return pass
    case "isolated":
      return { _tag: "reject", state: "isolated", closesAt: undefined }
    case "open":
      if (now < s.openUntil) return { _tag: "reject", state: "open", closesAt: s.openUntil }
      // The first caller after the open time is the first probe.
      s.state = "half-open"
      s.probes = { admitted: 0, successes: 0, failures: 0 }
      s.version++
      return admitProbe(s, config)
    case "half-open":
      return admitProbe(s, config)
  }
}

const admitProbe = (s: Snapshot, config: Config): Admission => {
  if (s.probes.admitted >= config.permittedProbes) {
    return { _tag: "reject", state: "half-open", closesAt: undefined }
  }
  s.probes.admitted++
  s.version++
  return probe
}

/** Successes among the probes needed to close. */
export const successesToClose = (config: Config): number =>
  Math.max(1, Math.ceil(config.probeSuccessRatio * config.permittedProbes))

const timeOf = (clock: number | (() => number)): number => typeof clock === "number" ? clock : clock()

/** Records the outcome of a call admitted by {@link acquire}. A call admitted in a state since left is not counted. */
export const record = (
  s: Snapshot,
  config: Config,
  clock: number | (() => number),
  admission: Admission,
  outcome: Outcome,
  durationMillis: number
): void => {
  // The time is read only when it matters (time windows, opening): reading a clock costs more than counting.
  const slow = config.slowCallMillis !== undefined && durationMillis >= config.slowCallMillis
  if (admission._tag === "call") {
    if (s.state !== "closed" || outcome === "ignored") return
    const at = s.window.kind === "time" ? timeOf(clock) : 0
    recordInWindow(s.window, config.window, at, outcome === "failure", slow)
    if (shouldTrip(config, s.window, at)) open(s, config, s.window.kind === "time" ? at : timeOf(clock))
    s.version++
    return
  }
  if (admission._tag !== "probe" || s.state !== "half-open") return
  s.version++
  if (outcome === "ignored") {
    // An interrupted probe proved nothing: give its permit back.
    s.probes.admitted = Math.max(0, s.probes.admitted - 1)
    return
  }
  // A slow probe is as unconvincing as a failed one when slowness is what trips the breaker.
  const bad = outcome === "failure" || slow
  if (bad) s.probes.failures++
  else s.probes.successes++
  const needed = successesToClose(config)
  if (s.probes.successes >= needed) close(s, config)
  else if (s.probes.failures > config.permittedProbes - needed) open(s, config, timeOf(clock))
}

/** Forces the breaker open until {@link reset} (maintenance, a known outage). */
export const isolate = (s: Snapshot): void => {
  s.state = "isolated"
  s.version++
}

/** Lets every call through and records nothing until {@link reset}. */
export const disable = (s: Snapshot): void => {
  s.state = "disabled"
  s.version++
}

/** Back to closed with an empty window. */
export const reset = (s: Snapshot, config: Config): void => {
  close(s, config)
  s.version++
}

/** A deep copy of a snapshot (what `structuredClone` does, at a fraction of its cost on the hot path). */
export const copy = (s: Snapshot): Snapshot => {
  const w = s.window
  const window: WindowSnapshot = w.kind === "consecutive"
    ? { kind: "consecutive", failures: w.failures }
    : w.kind === "count"
    ? { kind: "count", outcomes: w.outcomes.slice(), next: w.next, calls: w.calls, failures: w.failures, slow: w.slow }
    : {
      kind: "time",
      buckets: w.buckets.map((b) => ({ epoch: b.epoch, calls: b.calls, failures: b.failures, slow: b.slow })),
      epoch: w.epoch,
      calls: w.calls,
      failures: w.failures,
      slow: w.slow
    }
  return {
    state: s.state,
    openedAt: s.openedAt,
    openUntil: s.openUntil,
    opens: s.opens,
    window,
    probes: { admitted: s.probes.admitted, successes: s.probes.successes, failures: s.probes.failures },
    version: s.version
  }
}
