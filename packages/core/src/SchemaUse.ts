/**
 * Which payload schemas a process really uses, per topic and role: the transports, the outbox and the
 * consumers report each use here, and nothing happens unless a recorder is installed for the fiber (the
 * check is one `FiberRef` read). `@bulwark/contracts` installs one in tests to prove that the declared
 * contracts cover what the code does.
 */
import { Effect, FiberRef, type Schema } from "effect"
import { globalValue } from "effect/GlobalValue"

/** One use of a payload schema. */
export interface SchemaUse {
  /** `produce`: envelopes encoded for the topic; `consume`: deliveries of the topic decoded with it. */
  readonly role: "produce" | "consume"
  readonly topic: string
  readonly schema: Schema.Schema<any, any, any>
  /** The CloudEvents type and source of produced envelopes. */
  readonly type?: string
  readonly source?: string
  /** The consumer group of a consumer. */
  readonly group?: string
}

/** Receives the uses reported while it is installed. */
export type Recorder = (use: SchemaUse) => void

/** The recorder of the current fiber (inherited by the fibers it forks), if any. */
export const currentRecorder: FiberRef.FiberRef<Recorder | undefined> = globalValue(
  Symbol.for("@bulwark/core/SchemaUse/currentRecorder"),
  () => FiberRef.unsafeMake<Recorder | undefined>(undefined)
)

// Recordings running in the process. While there are none, producers and consumers add nothing to their
// effects: recording is for tests, and the hot paths (every append, every publish) should not pay for it.
let active = 0

/** Reports uses to the current fiber's recorder; `uses` is only called when one is installed. */
export const report = (uses: () => ReadonlyArray<SchemaUse>): Effect.Effect<void> =>
  FiberRef.getWith(currentRecorder, (recorder) =>
    recorder === undefined ? Effect.void : Effect.sync(() => {
      for (const use of uses()) recorder(use)
    }))

/**
 * `effect`, followed by reporting `uses` when a recording is running as the effect is built (producers and
 * consumers build theirs per call, inside the program being recorded); `effect` itself otherwise.
 */
export const reported = <A, E, R>(effect: Effect.Effect<A, E, R>, uses: () => ReadonlyArray<SchemaUse>): Effect.Effect<A, E, R> =>
  active === 0 ? effect : Effect.zipLeft(effect, report(uses))

/** Runs `effect` with `recorder` receiving every use reported inside it (and in the fibers it forks). */
export const recording = <A, E, R>(effect: Effect.Effect<A, E, R>, recorder: Recorder): Effect.Effect<A, E, R> =>
  Effect.acquireUseRelease(
    Effect.sync(() => void active++),
    () => Effect.locally(effect, currentRecorder, recorder),
    () => Effect.sync(() => void active--)
  )
