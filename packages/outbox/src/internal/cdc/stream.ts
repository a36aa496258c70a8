/**
 * One replication session of the change-data-capture relay on a `pg` client in replication mode: starts
 * `pgoutput` from the slot's confirmed position, gathers each committed transaction's outbox inserts, and
 * reports the position the relay confirms. The socket is paused while too many rows wait to be published,
 * so a slow transport holds the server back instead of filling memory.
 */
import { Effect, type Scope } from "effect"
import type pg from "pg"
import type { Row } from "../rows.js"
import * as Pgoutput from "./pgoutput.js"

/** The outbox inserts of one committed transaction and the position after its commit. */
export interface Transaction {
  readonly rows: ReadonlyArray<Row>
  readonly endLsn: Pgoutput.Lsn
}

/** A running replication session. */
export interface Session {
  /**
   * Waits for at least one committed transaction, then answers every one already received, up to about
   * `maxRows` rows (whole transactions; at least one). Fails once the connection broke.
   */
  readonly take: (maxRows: number) => Effect.Effect<ReadonlyArray<Transaction>, unknown>
  /** Sends the standby status update: the slot may forget everything up to `lsn`. */
  readonly confirm: (lsn: Pgoutput.Lsn) => Effect.Effect<void, unknown>
  /** The position last confirmed. */
  readonly confirmed: () => Pgoutput.Lsn
}

interface Columns {
  /** 1 for the columns the relay reads: the others are skipped undecoded. */
  readonly wanted: Uint8Array
  readonly id: number
  readonly topic: number
  readonly messageId: number
  readonly key: number
  readonly payload: number
  readonly headers: number
  readonly attempts: number
}

const columnsOf = (relation: Extract<Pgoutput.Message, { _tag: "Relation" }>): Columns | string => {
  const index = (name: string) => relation.columns.findIndex((c) => c.name === name)
  const columns = {
    id: index("id"),
    topic: index("topic"),
    messageId: index("message_id"),
    key: index("key"),
    payload: index("payload"),
    headers: index("headers"),
    attempts: index("attempts")
  }
  const missing = Object.entries(columns).filter(([, i]) => i < 0).map(([name]) => name)
  const wanted = new Uint8Array(relation.columns.length)
  for (const i of Object.values(columns)) if (i >= 0) wanted[i] = 1
  return missing.length === 0 ? { ...columns, wanted } : `relation ${relation.schema}.${relation.name} lacks outbox column(s) ${missing.join(", ")}`
}

/**
 * Starts streaming on `client` (connected with `replication: 'database'`) from `from` (the slot's confirmed
 * position) and answers the session. `highWater`: rows waiting above which the socket is paused.
 */
export const start = (
  client: pg.Client,
  options: {
    readonly slot: string
    readonly publication: string
    readonly table: string
    readonly from: Pgoutput.Lsn
    readonly highWater: number
    readonly statusInterval: number
  }
): Effect.Effect<Session, unknown, Scope.Scope> =>
  Effect.suspend(() => {
    const connection = (client as unknown as { connection: PgConnection }).connection
    const ready: Array<Transaction> = []
    let readyRows = 0
    let paused = false
    let broken: unknown = undefined
    let waiter: (() => void) | undefined
    const relations = new Map<number, Columns | string>()
    const wanted = (relation: number) => {
      const columns = relations.get(relation)
      return typeof columns === "object" ? columns.wanted : undefined
    }
    let open: Array<Row> | undefined
    let received = options.from
    let confirmed = options.from
    // Nothing received since the last confirmation, no transaction open and none taken but unconfirmed: a
    // keepalive's position may be confirmed, so that WAL written by other tables does not pile up behind an
    // idle slot. (A batch still being published must hold the position back, or a crash would lose it.)
    let idle = true
    let taken = options.from

    const send = (written: Pgoutput.Lsn, flushed: Pgoutput.Lsn) =>
      connection.sendCopyFromChunk(Pgoutput.standbyStatus(written, flushed, Date.now()))
    const wake = () => {
      const w = waiter
      waiter = undefined
      w?.()
    }
    const fail = (error: unknown) => {
      if (broken === undefined) broken = error ?? new Error("replication connection closed")
      wake()
    }

    const onFrame = (frame: Pgoutput.Frame) => {
      if (frame._tag === "Keepalive") {
        if (frame.walEnd > received) received = frame.walEnd
        if (idle && open === undefined && ready.length === 0 && frame.walEnd > confirmed) confirmed = frame.walEnd
        if (frame.replyRequested) send(received, confirmed)
        return
      }
      if (frame._tag !== "XLogData") return
      const message = frame.message
      if (frame.walEnd > received) received = frame.walEnd
      switch (message._tag) {
        case "Begin":
          open = []
          idle = false
          return
        case "Relation":
          relations.set(message.oid, columnsOf(message))
          return
        case "Insert": {
          const columns = relations.get(message.relation)
          if (columns === undefined || open === undefined) return fail(new Error("insert outside a transaction or before its relation"))
          if (typeof columns === "string") return fail(new Error(columns))
          const v = message.values
          const payload = Pgoutput.byteaFromText(v[columns.payload] ?? "")
          if (payload === undefined) return fail(new Error("payload not in bytea hex output"))
          open.push({
            id: v[columns.id] ?? "0",
            topic: v[columns.topic] ?? "",
            message_id: v[columns.messageId] ?? "",
            key: v[columns.key] ?? "",
            payload,
            headers: v[columns.headers] ?? "{}",
            attempts: Number(v[columns.attempts] ?? 0)
          })
          return
        }
        case "Commit": {
          const rows = open ?? []
          open = undefined
          // A transaction with no outbox insert (it only deleted) still moves the position forward.
          ready.push({ rows, endLsn: message.endLsn })
          readyRows += rows.length
          if (!paused && readyRows > options.highWater) {
            paused = true
            connection.stream.pause()
          }
          wake()
          return
        }
        default:
          return
      }
    }

    const onCopyData = (msg: { readonly chunk: Buffer }) => {
      try {
        onFrame(Pgoutput.decodeFrame(msg.chunk, wanted))
      } catch (error) {
        fail(error)
      }
    }
    const onError = (error: unknown) => fail(error)
    const onEnd = () => fail(new Error("replication connection ended"))
    let started = false
    let startWaiter: (() => void) | undefined
    const onStart = () => {
      started = true
      startWaiter?.()
    }

    const take = (maxRows: number): Effect.Effect<ReadonlyArray<Transaction>, unknown> =>
      Effect.suspend(() => {
        if (ready.length > 0) {
          let n = 0
          let rows = 0
          while (n < ready.length && (n === 0 || rows + ready[n]!.rows.length <= maxRows)) rows += ready[n++]!.rows.length
          const batch = ready.splice(0, n)
          readyRows -= rows
          taken = batch[batch.length - 1]!.endLsn
          idle = false
          if (paused && readyRows <= options.highWater / 2) {
            paused = false
            connection.stream.resume()
          }
          return Effect.succeed(batch)
        }
        if (broken !== undefined) return Effect.fail(broken)
        return Effect.zipRight(
          Effect.async<void>((wakeUp) => {
            // The fiber may have yielded since the check above: a commit that arrived meanwhile found no
            // waiter to wake, so look again before waiting.
            if (ready.length > 0 || broken !== undefined) return wakeUp(Effect.void)
            waiter = () => wakeUp(Effect.void)
            return Effect.sync(() => {
              waiter = undefined
            })
          }),
          take(maxRows)
        )
      })

    const session: Session = {
      take,
      confirm: (lsn) =>
        Effect.suspend(() => {
          if (broken !== undefined) return Effect.fail(broken)
          if (lsn > confirmed) confirmed = lsn
          idle = ready.length === 0 && open === undefined && confirmed >= taken
          send(received, confirmed)
          return Effect.void
        }),
      confirmed: () => confirmed
    }

    const attach = Effect.sync(() => {
      connection.on("copyData", onCopyData)
      connection.once("replicationStart", onStart)
      client.on("error", onError)
      client.on("end", onEnd)
      // The query never completes while streaming; its failure (slot in use, no such publication) ends the session.
      client.query(
        `START_REPLICATION SLOT "${options.slot}" LOGICAL ${Pgoutput.formatLsn(options.from)} (proto_version '1', publication_names '${options.publication}')`
      ).then(() => fail(new Error("replication ended")), fail)
      const timer = setInterval(() => {
        if (broken === undefined) send(received, confirmed)
      }, options.statusInterval)
      timer.unref()
      return timer
    })
    const detach = (timer: ReturnType<typeof setInterval>) =>
      Effect.sync(() => {
        clearInterval(timer)
        connection.off("copyData", onCopyData)
        connection.off("replicationStart", onStart)
        client.off("error", onError)
        client.off("end", onEnd)
      })
    const awaitStart = Effect.async<Session, unknown>((resume) => {
      const check = () => {
        if (started) resume(Effect.succeed(session))
        else if (broken !== undefined) resume(Effect.fail(broken))
        else return false
        startWaiter = undefined
        waiter = undefined
        return true
      }
      if (check()) return
      startWaiter = check
      waiter = check
    })
    return Effect.zipRight(Effect.acquireRelease(attach, detach), awaitStart)
  })

/** The parts of `pg`'s connection the session uses (not in its type declarations). */
interface PgConnection {
  readonly stream: { pause(): void; resume(): void }
  on(event: string, listener: (...args: Array<any>) => void): void
  once(event: string, listener: (...args: Array<any>) => void): void
  off(event: string, listener: (...args: Array<any>) => void): void
  sendCopyFromChunk(chunk: Buffer): void
}
