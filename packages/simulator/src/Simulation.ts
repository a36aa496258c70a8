/**
 * A simulation: a pipeline built on the simulated world, the generated scenarios it is run against and the
 * invariants it must keep.
 */
import type { Effect, Scope } from "effect"
import type { Policy } from "./History.js"
import * as Invariant from "./Invariant.js"
import type * as Scenario from "./Scenario.js"
import type { Ingress, World, WorldOptions } from "./World.js"

/** What {@link make} takes; only `name` and `pipeline` are required. */
export interface Options {
  readonly name: string
  /**
   * Builds the system under test inside the world: fork its consumers and relays in the scope and answer the
   * webhook receiver. It runs the user's real `Handler`s and `Pipeline`s with `world.layer` as the transport.
   */
  readonly pipeline: (world: World) => Effect.Effect<Ingress, never, Scope.Scope>
  /** Workload and fault generation (sizes, fault weights, the fault window). */
  readonly workload?: Scenario.Config
  /** World settings (retention, visibility timeout, …) besides the fault window. */
  readonly world?: Omit<WorldOptions, "faultWindow">
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
  readonly workload: Scenario.Config
  readonly faultWindow: number
  readonly world: Omit<WorldOptions, "faultWindow">
  readonly policy: Policy
  readonly livenessBound: number
  readonly invariants: ReadonlyArray<Invariant.Invariant>
}

/** The default policy: 5 deliveries, 3 call attempts, 1 half-open probe, 1 retry per instant, 30 s webhook tolerance. */
export const defaultPolicy: Policy = {
  maxDeliveries: 5,
  maxCallAttempts: 3,
  halfOpenProbes: 1,
  maxSynchronisedRetries: 1,
  webhookTolerance: 30_000,
  orderedEffects: ["downstream"]
}

/** Defines a simulation. */
export const make = (options: Options): Simulation => ({
  name: options.name,
  pipeline: options.pipeline,
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
