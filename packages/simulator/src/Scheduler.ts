/**
 * The virtual-time scheduler: a priority queue of timed events (ties broken by insertion sequence), an Effect
 * `Scheduler` that queues fiber tasks instead of handing them to the event loop, and a `Clock` whose `sleep`
 * registers a timed event. The whole simulated world runs synchronously inside {@link VirtualScheduler.run}:
 * it runs ready fiber tasks until every fiber is blocked, then jumps virtual time to the next event.
 *
 * Why not `TestClock`: adjusting it per event costs several real event-loop turns per fired sleep
 * (~100-200 sleeps/s); this scheduler never touches real timers, so it runs as fast as the fibers do.
 */
import { Clock, Duration, Effect, type Exit, FiberId, Logger, LogLevel, Random, type Scheduler } from "effect"

interface Timer {
  readonly time: number
  readonly seq: number
  run: (() => void) | undefined
}

/** A binary min-heap of timers ordered by (time, seq): equal times fire in registration order. */
class TimerHeap {
  private readonly items: Array<Timer> = []
  get size(): number {
    return this.items.length
  }
  push(timer: Timer): void {
    const items = this.items
    items.push(timer)
    let i = items.length - 1
    while (i > 0) {
      const parent = (i - 1) >> 1
      if (!before(items[i]!, items[parent]!)) break
      ;[items[i], items[parent]] = [items[parent]!, items[i]!]
      i = parent
    }
  }
  peek(): Timer | undefined {
    return this.items[0]
  }
  pop(): Timer | undefined {
    const items = this.items
    const top = items[0]
    const last = items.pop()
    if (items.length > 0 && last !== undefined) {
      items[0] = last
      let i = 0
      for (;;) {
        const l = 2 * i + 1
        const r = l + 1
        let m = i
        if (l < items.length && before(items[l]!, items[m]!)) m = l
        if (r < items.length && before(items[r]!, items[m]!)) m = r
        if (m === i) break
        ;[items[i], items[m]] = [items[m]!, items[i]!]
        i = m
      }
    }
    return top
  }
}

const before = (a: Timer, b: Timer): boolean => a.time < b.time || (a.time === b.time && a.seq < b.seq)

/** A handle to cancel a scheduled event. */
export type TimerHandle = Timer

/**
 * Deterministic virtual time and fiber scheduling. `choices` is the generated interleaving: whenever more
 * than one fiber task is ready after several events fired at the same instant, the next choice (modulo the
 * number ready) picks which runs; once the choices run out, tasks run in FIFO order. An empty list is the plainest interleaving, which is what
 * fast-check shrinks towards.
 */
export class VirtualScheduler implements Scheduler.Scheduler {
  private readonly timers = new TimerHeap()
  private ready: Array<() => void> = []
  private readyHead = 0
  private seq = 0
  private choiceIndex = 0
  private stopped = false
  // Choices are spent only where fibers woken at the same instant race, not on start-up order, so a short
  // generated list reaches the races that matter.
  private racing = false
  /** Virtual milliseconds since the start of the run. */
  now = 0
  /** Timed events fired plus fiber tasks run. */
  events = 0
  /**
   * Set when more than {@link maxEventsPerInstant} events ran without virtual time moving: some fiber spins
   * (re-arms a zero-length sleep, or yields forever), which would hang the run — and burn a CPU in production.
   */
  livelock: number | undefined = undefined
  /** The events one virtual instant may take before the run is stopped as a livelock. */
  maxEventsPerInstant = 200_000
  private instantStart = 0

  constructor(private readonly choices: ReadonlyArray<number> = []) {}

  shouldYield(): false {
    // Fibers run to their next asynchronous boundary; interleaving is decided by `choices`, not op counts.
    return false
  }

  scheduleTask(task: () => void): void {
    this.ready.push(task)
  }

  /**
   * Registers `run` to fire `delay` virtual ms from now. Virtual time is whole milliseconds (a fraction is
   * rounded up), so comparisons of times never suffer float error (3901.819 + 1000 − 3901.819 < 1000).
   */
  schedule(delay: number, run: () => void): TimerHandle {
    const timer: Timer = { time: this.now + Math.max(0, Math.ceil(delay)), seq: this.seq++, run }
    this.timers.push(timer)
    return timer
  }

  /** Cancels a scheduled event (lazily: it is skipped when reached). */
  cancel(handle: TimerHandle): void {
    handle.run = undefined
  }

  /** Starts a new allowance of events for the current instant. */
  resetInstant(): void {
    this.instantStart = this.events
  }

  /** Stops the run loop at the next opportunity. */
  stop(): void {
    this.stopped = true
  }

  get isStopped(): boolean {
    return this.stopped
  }

  private nextTask(): (() => void) | undefined {
    const count = this.ready.length - this.readyHead
    if (count === 0) return undefined
    if (count > 1 && this.racing && this.choiceIndex < this.choices.length) {
      const pick = this.readyHead + (this.choices[this.choiceIndex++]! % count)
      const task = this.ready[pick]!
      this.ready.splice(pick, 1)
      return task
    }
    const task = this.ready[this.readyHead++]!
    if (this.readyHead > 1024 && this.readyHead * 2 > this.ready.length) {
      this.ready = this.ready.slice(this.readyHead)
      this.readyHead = 0
    }
    return task
  }

  /** Runs every ready fiber task (and those they make ready) until all fibers are blocked. */
  drain(): void {
    let task = this.nextTask()
    while (task !== undefined) {
      this.events++
      task()
      if (this.events - this.instantStart > this.maxEventsPerInstant) {
        this.livelock = this.now
        this.stopped = true
        return
      }
      task = this.nextTask()
    }
  }

  /**
   * Runs until nothing is left to do, `until` virtual ms is reached, or {@link stop} is called.
   * `onAdvance` is called whenever virtual time moves (after the fibers have settled).
   */
  run(until: number, onAdvance?: (now: number) => void): void {
    for (;;) {
      this.drain()
      if (this.stopped) return
      let timer = this.timers.peek()
      while (timer !== undefined && timer.run === undefined) {
        this.timers.pop()
        timer = this.timers.peek()
      }
      if (timer === undefined || timer.time > until) return
      this.timers.pop()
      if (timer.time > this.now) {
        this.now = timer.time
        this.instantStart = this.events
        if (onAdvance) {
          onAdvance(this.now)
          if (this.stopped) return
        }
      }
      // Every event due at this instant fires before any fiber runs, so the fibers they wake are ready
      // together and the interleaving choices decide their order.
      const now = this.now
      let fired = 0
      for (;;) {
        const run = timer.run
        timer.run = undefined
        if (run !== undefined) {
          this.events++
          fired++
          run()
        }
        timer = this.timers.peek()
        if (timer === undefined || timer.time > now) break
        this.timers.pop()
      }
      this.racing = fired > 1
    }
  }
}

/**
 * An Effect `Clock` reading virtual time; `sleep` registers a timed event and resumes the fiber when it fires.
 * `beforeSleep` runs in the sleeping fiber first (the world counts a sleep as a step a process can crash at).
 */
export const makeClock = (scheduler: VirtualScheduler, epochMillis = 0, beforeSleep?: Effect.Effect<void>): Clock.Clock => {
  const millis = () => epochMillis + scheduler.now
  return {
    [Clock.ClockTypeId]: Clock.ClockTypeId,
    unsafeCurrentTimeMillis: millis,
    currentTimeMillis: Effect.sync(millis),
    unsafeCurrentTimeNanos: () => BigInt(Math.round(millis() * 1_000_000)),
    currentTimeNanos: Effect.sync(() => BigInt(Math.round(millis() * 1_000_000))),
    sleep: (duration: Duration.Duration) => {
      const wait = Effect.async<void>((resume) => {
        const ms = Duration.toMillis(duration)
        if (!Number.isFinite(ms)) return
        const handle = scheduler.schedule(ms, () => resume(Effect.void))
        return Effect.sync(() => scheduler.cancel(handle))
      })
      return beforeSleep === undefined ? wait : Effect.zipRight(beforeSleep, wait)
    }
  }
}

/** The fixed wall-clock epoch of every simulated run (2030-01-01T00:00:00Z), so reports never depend on the real date. */
export const epoch = Date.UTC(2030, 0, 1)

/** What {@link runProgram} answers. */
export interface ProgramResult<A, E> {
  /** The program's exit when it finished within the run, otherwise undefined (it was interrupted at the end). */
  readonly exit: Exit.Exit<A, E> | undefined
  readonly now: number
  readonly events: number
}

/**
 * Runs `program` to completion in virtual time: seeded `Random`, virtual `Clock`, this scheduler for every
 * fiber, logging off (the default logger reads the real date). Anything still running at `until` is interrupted.
 */
export const runProgram = <A, E>(
  scheduler: VirtualScheduler,
  program: Effect.Effect<A, E>,
  options: {
    readonly seed: number
    readonly until: number
    readonly onAdvance?: (now: number) => void
    /** Called before still-running fibers are interrupted (e.g. to stop recording). */
    readonly beforeInterrupt?: () => void
    /** Runs in a fiber before each of its sleeps. */
    readonly beforeSleep?: Effect.Effect<void>
  }
): ProgramResult<A, E> => {
  const wrapped = program.pipe(
    Effect.withClock(makeClock(scheduler, epoch, options.beforeSleep)),
    Effect.withRandom(Random.make(options.seed)),
    Logger.withMinimumLogLevel(LogLevel.None)
  )
  // Simulated failures are data, not bugs to debug by stack: capturing (and source-mapping) a stack for every
  // simulated 503 or crash would dominate the run time.
  const stackTraceLimit = Error.stackTraceLimit
  Error.stackTraceLimit = 0
  try {
    return runFiber(scheduler, wrapped, options)
  } finally {
    Error.stackTraceLimit = stackTraceLimit
  }
}

const runFiber = <A, E>(
  scheduler: VirtualScheduler,
  wrapped: Effect.Effect<A, E>,
  options: { readonly until: number; readonly onAdvance?: (now: number) => void; readonly beforeInterrupt?: () => void }
): ProgramResult<A, E> => {
  const fiber = Effect.runFork(wrapped, { scheduler })
  let exit: Exit.Exit<A, E> | undefined
  fiber.addObserver((e) => {
    exit = e
    scheduler.stop()
  })
  scheduler.run(options.until, options.onAdvance)
  const finished = exit
  if (finished === undefined) {
    options.beforeInterrupt?.()
    fiber.unsafeInterruptAsFork(FiberId.none)
    // A fresh allowance for the interruption itself (a spinning fiber stops at its next step).
    scheduler.resetInstant()
    scheduler.drain()
  }
  return { exit: finished, now: scheduler.now, events: scheduler.events }
}

