/**
 * A simulation: a pipeline built on the simulated world, the generated scenarios it is run against and the
 * invariants it must keep.
 */
import type { Effect, Layer, Scope } from "effect"
import type { Policy } from "./History.js"
import * as Invariant from "./Invariant.js"
import type * as Scenario from "./Scenario.js"
import type { Ingress, World, WorldOptions } from "./World.js"

/** The ports the world provides to the receiver it serves (see {@link World.layer}). */
export type WorldPorts = Layer.Layer.Success<World["layer"]>

/** What {@link make} takes; only `name` and `pipeline` are required. */
export interface Options {
  readonly name: string
  /**
   * Builds the system under test inside the world and answers its webhook receiver. Long-running parts
   * (consumers, relays, drains, replayers) are started with `world.spawn(name, program)`, so each is a
   * simulated process that crashes and restarts; they take their ports from `world.layer`.
   */
  readonly pipeline: (world: World) => Effect.Effect<Ingress, never, Scope.Scope>
  /**
   * The JSON body the simulated provider sends for a work item (its `ref` names it: carry it in some string
   * field). Default `{ ref, key: "k<n>", amount, poison }`.
   */
  readonly body?: (item: Scenario.WorkItem, ref: string) => unknown
  /**
   * Whether the pipeline's own state is settled (e.g. its outbox is empty), so a run may end early; the
   * world's transport and the messages' final states are checked besides. Default: always.
   */
  readonly quiescent?: (world: World) => boolean
  /** Workload and fault generation (sizes, fault weights, the fault window). */
  readonly workload?: Scenario.Config
  /** World settings (retention, visibility timeout, …) besides the fault window. */
  readonly world?: Omit<WorldOptions, "faultWindow" | "stallsEndBy">
  /** The policies the invariants hold the pipeline to. */
  readonly policy?: Partial<Policy>
  /** Virtual ms after the fault window within which everything must be final. Default 120 000. */
  readonly livenessBound?: number
  /** The invariants; default {@link Invariant.all}. Add your own with `[...Invariant.all, mine]`. */
  readonly invariants?: ReadonlyArray<Invariant.Invariant>
}

/** A simulation with every default filled in. */
export interface Simulation {
  readonly name: string
  readonly pipeline: Options["pipeline"]
  readonly quiescent: (world: World) => boolean
  readonly body: (item: Scenario.WorkItem, ref: string) => unknown
  readonly workload: Scenario.Config
  readonly faultWindow: number
  readonly world: Omit<WorldOptions, "faultWindow" | "stallsEndBy">
  readonly policy: Policy
  readonly livenessBound: number
  readonly invariants: ReadonlyArray<Invariant.Invariant>
}

/**
 * The default policy: 5 deliveries, 3 call attempts, each breaker's own probe bound, 2 retries of different
 * messages per instant, 30 s webhook tolerance.
 */
export const defaultPolicy: Policy = {
  maxDeliveries: 5,
  maxCallAttempts: 3,
  maxSynchronisedRetries: 2,
  maxFailingCallsPerSecond: 20,
  webhookTolerance: 30_000,
  orderedEffects: ["downstream"]
}

/** The default provider body: `{ ref, key, amount, poison }`. */
export const defaultBody = (item: Scenario.WorkItem, ref: string): unknown => ({
  ref,
  key: `k${item.key}`,
  amount: item.amount,
  poison: item.poison
})

/** Defines a simulation. */
export const make = (options: Options): Simulation => ({
  name: options.name,
  pipeline: options.pipeline,
  quiescent: options.quiescent ?? (() => true),
  body: options.body ?? defaultBody,
  workload: options.workload ?? {},
  faultWindow: options.workload?.faultWindow ?? 20_000,
  world: options.world ?? {},
  policy: { ...defaultPolicy, ...options.policy },
  livenessBound: options.livenessBound ?? 120_000,
  invariants: options.invariants ?? Invariant.all
})

/** Whether a value looks like a simulation (used by the CLI when loading a user's module). */
export const isSimulation = (u: unknown): u is Simulation =>
  typeof u === "object" && u !== null && typeof (u as Simulation).name === "string" &&
  typeof (u as Simulation).pipeline === "function" && Array.isArray((u as Simulation).invariants)
