/**
 * What the run observed, counted where it happens, so the summary can be checked against itself: every
 * number in the table comes from here, from the shipping API's own records or from the database.
 */
import { Context, Effect, Layer } from "effect"

interface Family {
  readonly prefix: string
  readonly width: number
  readonly suffix: string
  values: Uint32Array
}

// Ids of the run are a prefix, a zero-padded number and maybe a suffix (`ord_000042`, `evt_000042`,
// `ord_000042:paid:replay:1`); anything else (UUIDs) falls back to a Map.
const numbered = /^([^0-9]*)([0-9]{6})(?![0-9])(.*)$/
const maxFamilies = 32
const chunk = 16_384

/**
 * A copy of `array` long enough for `index`, grown by whole chunks rather than doubled: the heap then grows
 * steadily with the ids instead of by a jump of the whole table (which the soak would read as a step).
 */
export const grow = <A extends Uint32Array | Float64Array>(array: A, index: number): A => {
  const grown = new (array.constructor as new(length: number) => A)(Math.ceil((index + 1) / chunk) * chunk)
  grown.set(array)
  return grown
}

/**
 * Positive numbers by id, in 4 bytes per id for the run's numbered ids instead of a Map entry and a string
 * each (about 100 bytes). The run's bookkeeping knows every order, payment and shipment, so it grows with
 * the webhooks; kept like this it is about 1 MB per 100 000 webhooks, which the soak's flat-heap check can
 * tell apart from a leak. Iterates ids in numeric order within a family.
 */
export class IdTable implements Iterable<[string, number]> {
  private readonly families = new Map<string, Family>()
  private readonly other = new Map<string, number>()
  private count = 0

  /** Ids held. */
  get size(): number {
    return this.count
  }

  private locate(id: string, create: boolean): { family: Family; index: number } | undefined {
    const match = numbered.exec(id)
    if (match === null) return undefined
    const [, prefix, digits, suffix] = match as unknown as [string, string, string, string]
    const key = `${prefix}\u0000${digits.length}\u0000${suffix}`
    let family = this.families.get(key)
    if (family === undefined) {
      if (!create || this.families.size >= maxFamilies) return undefined
      family = { prefix, width: digits.length, suffix, values: new Uint32Array(chunk) }
      this.families.set(key, family)
    }
    return { family, index: Number(digits) }
  }

  /** The number held for `id`. */
  get(id: string): number | undefined {
    const at = this.locate(id, false)
    if (at === undefined) return this.other.get(id)
    const value = at.index < at.family.values.length ? at.family.values[at.index]! : 0
    return value === 0 ? undefined : value
  }

  has(id: string): boolean {
    return this.get(id) !== undefined
  }

  /** Holds `value` (positive) for `id`. */
  set(id: string, value: number): this {
    const at = this.locate(id, true)
    if (at === undefined) {
      if (!this.other.has(id)) this.count++
      this.other.set(id, value)
      return this
    }
    let values = at.family.values
    if (at.index >= values.length) {
      values = at.family.values = grow(values, at.index)
    }
    if (values[at.index] === 0) this.count++
    values[at.index] = value
    return this
  }

  /** Holds `id` (as a set does). */
  add(id: string): this {
    return this.has(id) ? this : this.set(id, 1)
  }

  *[Symbol.iterator](): IterableIterator<[string, number]> {
    for (const family of this.families.values()) {
      for (let index = 0; index < family.values.length; index++) {
        const value = family.values[index]!
        if (value !== 0) yield [`${family.prefix}${String(index).padStart(family.width, "0")}${family.suffix}`, value]
      }
    }
    yield* this.other
  }

  *keys(): IterableIterator<string> {
    for (const [id] of this) yield id
  }

  *values(): IterableIterator<number> {
    for (const [, value] of this) yield value
  }
}

/**
 * A growing list of strings in 4 bytes each for ids of the form prefix + six digits + suffix (`ord_000042`,
 * `ord_000042:paid`), the others kept as they are: the shipping stand-in's booking log uses it so that its
 * records, which must name every parcel, stay small.
 */
export class StringColumn {
  private codes = new Uint32Array(chunk)
  private readonly families: Array<{ readonly prefix: string; readonly suffix: string }> = []
  private readonly familyIndex = new Map<string, number>()
  private readonly other = new Map<number, string>()
  length = 0

  push(value: string): void {
    if (this.length === this.codes.length) this.codes = grow(this.codes, this.length)
    const match = numbered.exec(value)
    let code = 0
    if (match !== null) {
      const [, prefix, digits, suffix] = match as unknown as [string, string, string, string]
      const key = `${prefix}\u0000${suffix}`
      let family = this.familyIndex.get(key)
      if (family === undefined && this.families.length < maxFamilies) {
        family = this.families.length
        this.families.push({ prefix, suffix })
        this.familyIndex.set(key, family)
      }
      if (family !== undefined) code = family * 1_000_000 + Number(digits) + 1
    }
    if (code === 0) this.other.set(this.length, value)
    this.codes[this.length++] = code
  }

  at(index: number): string {
    const code = this.codes[index]!
    if (code === 0) return this.other.get(index)!
    const family = this.families[Math.floor((code - 1) / 1_000_000)]!
    return `${family.prefix}${String((code - 1) % 1_000_000).padStart(6, "0")}${family.suffix}`
  }
}

/** Counters of one run; mutated only through {@link Tally} effects. */
export class Counters {
  /** Payment envelopes whose delivery is final (acked or dead-lettered), by message id. */
  readonly paymentsSettled = new IdTable()
  /** `OrderPaid` envelopes whose delivery is final, by message id. */
  readonly orderPaidSettled = new IdTable()
  /** Orders this run marked paid, with how many times (must be 1 each). */
  readonly ordersPaid = new IdTable()
  /** Payments the idempotency store recognised and skipped without running the order handler. */
  paymentDuplicatesSkipped = 0
  /** Payments for an order that the order's own row showed as already paid (the in-transaction guard). */
  paymentDuplicatesAbsorbed = 0
  /** `OrderPaid` deliveries the idempotency store recognised and skipped. */
  shippingDuplicatesSkipped = 0
  /** Attempts the shipping handler made, the first of each delivery included. */
  shippingAttempts = 0
  /** Attempts beyond the first within one delivery (the retry policy at work). */
  shippingRetries = 0
  /** Deliveries handed back to the transport for a later redelivery. */
  redeliveries = 0
  /** Polled bank transfer versions received by their consumer, by envelope id, with how many times. */
  readonly transfersReceived = new Map<string, number>()
  /** Deliveries the pipelines dead-lettered, by topic. */
  readonly deadLettered = new Map<string, number>()
}

/** The run's counters. */
export class Tally extends Context.Tag("@bulwark-examples/payments/Tally")<Tally, Counters>() {
  /** Fresh counters. */
  static readonly layer: Layer.Layer<Tally> = Layer.sync(Tally, () => new Counters())
}

/** Updates the counters. */
export const update = (f: (counters: Counters) => void): Effect.Effect<void, never, Tally> =>
  Effect.map(Tally, (counters) => f(counters))

/** Adds one to a per-key count. */
export const bump = (map: Map<string, number> | IdTable, key: string): void => {
  map.set(key, (map.get(key) ?? 0) + 1)
}
