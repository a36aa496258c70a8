/**
 * The shipping provider: a port, and an in-process stand-in that misbehaves the way real ones do.
 *
 * The stand-in honours an `Idempotency-Key` like most shipping and payment APIs: a repeated key answers the
 * shipment it already created instead of booking a second parcel. That is what makes a retry after a
 * timeout safe — the first call may have worked although its answer never arrived.
 */
import { Failure } from "@bulwark/core"
import { Clock, Context, Data, Duration, Effect, Layer } from "effect"
import { grow, IdTable, StringColumn } from "./Tally.js"

/** What the shipping handler asks for. */
export interface ShipmentRequest {
  readonly orderId: string
  readonly customerId: string
  readonly paymentId: string
  readonly sequence: number
  /** Stable across retries and redeliveries of one `OrderPaid` (its envelope id). */
  readonly idempotencyKey: string
}

/** A booked parcel. */
export interface Shipment {
  readonly shipmentId: string
  readonly orderId: string
}

/**
 * The API refused. 5xx and 429 are the provider's trouble (transient, `dependency`); 422 means it will
 * never ship this order as given (permanent, `schema`: the address failed validation).
 */
export class ShippingError extends Data.TaggedError("ShippingError")<{
  readonly status: number
  readonly orderId: string
}> implements Failure.Classified {
  get [Failure.ClassifiedTypeId](): Failure.Verdict {
    return this.status === 422
      ? Failure.verdict("permanent", "schema")
      : this.status >= 500 || this.status === 429
      ? Failure.verdict("transient", "dependency")
      : Failure.verdict("permanent", "unknown")
  }
  override get message(): string {
    return `shipping API answered ${this.status} for order ${this.orderId}`
  }
}

/** The shipping API port. */
export class ShippingApi extends Context.Tag("@bulwark-examples/payments/ShippingApi")<ShippingApi, {
  readonly createShipment: (request: ShipmentRequest) => Effect.Effect<Shipment, ShippingError>
}>() {}

/** How the stand-in misbehaves; every field has a default. */
export interface FlakyOptions {
  /** Time per answered call. Default 1 ms. */
  readonly latency?: Duration.DurationInput
  /** An outage (every call answers 503) starting at the n-th call and lasting `duration`. Default none. */
  readonly outage?: { readonly afterCalls: number; readonly duration: Duration.DurationInput }
  /** Orders whose address the API rejects (422). Default none. */
  readonly undeliverable?: (orderId: string) => boolean
  /** Every n-th booking answers `slowBy` late — after the parcel was booked. Default 0 (never). */
  readonly slowEvery?: number
  /** How late a slow answer is. Default 400 ms. */
  readonly slowBy?: Duration.DurationInput
}

/** One booking as the provider recorded it. */
export interface Booking {
  readonly shipmentId: string
  readonly orderId: string
  readonly customerId: string
  readonly sequence: number
  readonly idempotencyKey: string
}

/**
 * Bookings in the order they were made, stored by column (the provider's ledger names every parcel of a run,
 * so it is kept to about 20 bytes a booking; the soak runs 100 000 webhooks under a 256 MB heap).
 */
export class BookingLog implements Iterable<Booking> {
  private readonly orderIds = new StringColumn()
  private readonly customerIds = new StringColumn()
  private readonly keys = new StringColumn()
  private sequences = new Float64Array(1024)

  get length(): number {
    return this.orderIds.length
  }

  push(booking: Omit<Booking, "shipmentId">): Booking {
    const index = this.length
    if (index === this.sequences.length) this.sequences = grow(this.sequences, index)
    this.sequences[index] = booking.sequence
    this.orderIds.push(booking.orderId)
    this.customerIds.push(booking.customerId)
    this.keys.push(booking.idempotencyKey)
    return this.at(index)
  }

  /** The `index`-th booking (its shipment id is `shp_<index + 1>`). */
  at(index: number): Booking {
    return {
      shipmentId: `shp_${index + 1}`,
      orderId: this.orderIds.at(index),
      customerId: this.customerIds.at(index),
      sequence: this.sequences[index]!,
      idempotencyKey: this.keys.at(index)
    }
  }

  *[Symbol.iterator](): IterableIterator<Booking> {
    for (let index = 0; index < this.length; index++) yield this.at(index)
  }
}

/** The provider's own records: the ground truth the exactly-once check compares against. */
export class ShippingRecords {
  /** Bookings in the order they were made. */
  readonly bookings = new BookingLog()
  /** Every call that reached the API. */
  calls = 0
  /** Calls answered 503 during the outage. */
  outageRejections = 0
  /** Calls answered 422. */
  addressRejections = 0
  /** Calls that repeated an idempotency key and got the existing shipment back. */
  keyReplays = 0
  /** Bookings answered late. */
  slowAnswers = 0
  /** When the outage began and ended (epoch ms), once it has. */
  outage: { readonly from: number; readonly until: number } | undefined = undefined

  /** Bookings per order. */
  perOrder(): Map<string, number> {
    const counts = new Map<string, number>()
    for (const booking of this.bookings) counts.set(booking.orderId, (counts.get(booking.orderId) ?? 0) + 1)
    return counts
  }
}

/** The stand-in's records, for the summary and the tests. */
export class ShippingProvider extends Context.Tag("@bulwark-examples/payments/ShippingProvider")<
  ShippingProvider,
  ShippingRecords
>() {}

/** Builds the flaky stand-in over fresh records. */
export const makeFlaky = (options: FlakyOptions = {}) =>
  Effect.sync(() => {
    const records = new ShippingRecords()
    const latency = Duration.decode(options.latency ?? Duration.millis(1))
    const slowBy = Duration.decode(options.slowBy ?? Duration.millis(400))
    // Idempotency key → booking number + 1.
    const byKey = new IdTable()
    let bookingsSoFar = 0
    const createShipment = (request: ShipmentRequest): Effect.Effect<Shipment, ShippingError> =>
      Effect.flatMap(Clock.currentTimeMillis, (now) => {
        records.calls++
        const outage = options.outage
        if (outage !== undefined && records.outage === undefined && records.calls >= outage.afterCalls) {
          records.outage = { from: now, until: now + Duration.toMillis(outage.duration) }
        }
        if (records.outage !== undefined && now < records.outage.until) {
          records.outageRejections++
          return Effect.fail(new ShippingError({ status: 503, orderId: request.orderId }))
        }
        if (options.undeliverable?.(request.orderId) === true) {
          records.addressRejections++
          return Effect.zipRight(Effect.sleep(latency), Effect.fail(new ShippingError({ status: 422, orderId: request.orderId })))
        }
        const existing = byKey.get(request.idempotencyKey)
        if (existing !== undefined) {
          records.keyReplays++
          const booked = records.bookings.at(existing - 1)
          return Effect.as(Effect.sleep(latency), { shipmentId: booked.shipmentId, orderId: booked.orderId })
        }
        // Booked on arrival, answered after the latency: a caller that gives up early still got a parcel.
        byKey.set(request.idempotencyKey, records.bookings.length + 1)
        const booked = records.bookings.push({
          orderId: request.orderId,
          customerId: request.customerId,
          sequence: request.sequence,
          idempotencyKey: request.idempotencyKey
        })
        const shipment: Shipment = { shipmentId: booked.shipmentId, orderId: booked.orderId }
        bookingsSoFar++
        const slow = options.slowEvery !== undefined && options.slowEvery > 0 && bookingsSoFar % options.slowEvery === 0
        if (slow) records.slowAnswers++
        return Effect.as(Effect.sleep(slow ? Duration.sum(latency, slowBy) : latency), shipment)
      })
    return { records, api: { createShipment } }
  })

/** Provides the flaky stand-in as the {@link ShippingApi}, and its records. */
export const layerFlaky = (options: FlakyOptions = {}): Layer.Layer<ShippingApi | ShippingProvider> =>
  Layer.effectContext(Effect.map(makeFlaky(options), ({ api, records }) =>
    Context.make(ShippingApi, api).pipe(Context.add(ShippingProvider, records))))
