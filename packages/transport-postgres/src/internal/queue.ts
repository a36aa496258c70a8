import { Delivery, Supervise } from "@bulwark/core"
import { Database, Migrations, Transaction } from "@bulwark/sql"
import { Transport } from "@bulwark/transport"
import * as Driver from "@bulwark/transport/Driver"
import * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import { Chunk, Duration, Effect, PubSub, Queue, Schedule, Stream } from "effect"


export interface Settings {
  readonly table: string
  readonly visibilityTimeout: Duration.Duration
  readonly pollInterval: Duration.Duration
  readonly batchSize: number
  readonly orderedPerKey: boolean
}

interface Row {
  readonly id: number
  readonly message_id: string
  readonly key: string
  readonly payload: Uint8Array
  readonly headers: string
  readonly attempt: number
}


export const migrations = (table: string): ReadonlyArray<Migrations.Migration> => [{
  id: 1,
  name: "queue table and consumer groups",
  statements: [
    `CREATE TABLE IF NOT EXISTS ${table} (
      id bigserial PRIMARY KEY,
      topic text NOT NULL,
      grp text NOT NULL,
      message_id text NOT NULL,
      key text NOT NULL,
      payload bytea NOT NULL,
      headers text NOT NULL,
      attempt integer NOT NULL DEFAULT 0,
      visible_at timestamptz NOT NULL DEFAULT now(),
      created_at timestamptz NOT NULL DEFAULT now()
    )`,
    `CREATE INDEX IF NOT EXISTS ${table}_ready ON ${table} (topic, grp, visible_at, id)`,
    `CREATE INDEX IF NOT EXISTS ${table}_key ON ${table} (topic, grp, key, id)`,
    `CREATE TABLE IF NOT EXISTS ${table}_groups (
      topic text NOT NULL,
      grp text NOT NULL,
      created_at timestamptz NOT NULL DEFAULT now(),
      PRIMARY KEY (topic, grp)
    )`
  ]
}]

export const migrationComponent = (table: string) => `transport-postgres:${table}`

const toBuffer = (bytes: Uint8Array) => Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)

export const make = (settings: Settings) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const db = yield* Database.Database
    const table = yield* Migrations.tableName(settings.table)
    yield* Migrations.run(migrationComponent(table), migrations(table))
    const channel = table
    // A lost connection, also at COMMIT, is a typed SqlError (Transaction.CommitUnknown), never a defect.
    const withTransaction = Transaction.transactional(sql.withTransaction)
    const vtMillis = Duration.toMillis(settings.visibilityTimeout)
    // How long a settle lost with the connection is tried again: at least the visibility timeout (after it the
    // message is redelivered anyway), at least a few seconds for a restarting database.
    const settleRetry = Schedule.exponential("50 millis", 2).pipe(
      Schedule.either(Schedule.spaced("1 second")),
      Schedule.jittered,
      Schedule.upTo(Duration.max(settings.visibilityTimeout, Duration.seconds(5)))
    )

    // One LISTEN per transport; subscriptions wait on it and fall back to polling when it is down.
    const wakeups = yield* PubSub.sliding<string>(256)
    // Logged when it breaks and when a notification arrives again, not at every retry of an outage.
    const listening = Supervise.changes("transport-postgres: LISTEN failed; polling until it is back")
    yield* db.listen(channel).pipe(
      Stream.runForEach((topic) => Effect.zipRight(listening.ok, PubSub.publish(wakeups, topic))),
      Effect.tapError(listening.failed),
      Effect.retry(Schedule.spaced("1 second")),
      Effect.forkScoped
    )

    // Inserts one row per known group of the topic, or one unassigned row ('') the first group adopts.
    const insert = (topic: string, messages: ReadonlyArray<Transport.OutgoingMessage>) =>
      Effect.gen(function*() {
        const groups = yield* sql<{ grp: string }>`SELECT grp FROM ${sql(`${table}_groups`)} WHERE topic = ${topic}`
        const targets = groups.length === 0 ? [""] : groups.map((g) => g.grp)
        const rows = targets.flatMap((grp) =>
          messages.map((m) => ({
            topic,
            grp,
            message_id: m.id,
            key: m.key,
            payload: toBuffer(m.payload),
            headers: JSON.stringify(m.headers)
          }))
        )
        for (let i = 0; i < rows.length; i += 1000) {
          yield* sql`INSERT INTO ${sql(table)} ${sql.insert(rows.slice(i, i + 1000))}`
        }
        yield* db.notify(channel, topic)
      })

    const publish = (topic: string, messages: ReadonlyArray<Transport.OutgoingMessage>) =>
      messages.length === 0
        ? Effect.void
        : withTransaction(insert(topic, messages)).pipe(
          Effect.mapError((cause) => new Transport.PublishError({ topic, cause }))
        )

    const claim = (topic: string, group: string): Effect.Effect<ReadonlyArray<Row>, SqlError> => {
      const headOfKey = settings.orderedPerKey
        ? sql`AND (c.key = '' OR NOT EXISTS (
            SELECT 1 FROM ${sql(table)} p
            WHERE p.topic = c.topic AND p.grp IN (${group}, '') AND p.key = c.key AND p.id < c.id))`
        : sql``
      return sql<Row>`
        UPDATE ${sql(table)} SET
          visible_at = now() + (${vtMillis}::float8 * interval '1 millisecond'),
          attempt = attempt + 1,
          grp = ${group}
        WHERE id IN (
          SELECT c.id FROM ${sql(table)} c
          WHERE c.topic = ${topic} AND c.grp IN (${group}, '') AND c.visible_at <= now()
          ${headOfKey}
          ORDER BY c.id
          LIMIT ${settings.batchSize}
          FOR UPDATE SKIP LOCKED)
        RETURNING id, message_id, key, payload, headers, attempt`.pipe(
        Effect.map((rows) => [...rows].sort((a, b) => Number(a.id) - Number(b.id)))
      )
    }

    const toDelivery = (topic: string, row: Row): Delivery.Delivery => {
      const id = Number(row.id)
      const message: Delivery.Message = {
        id: row.message_id,
        topic,
        key: row.key,
        payload: new Uint8Array(row.payload),
        headers: JSON.parse(row.headers) as Record<string, string>
      }
      const settleError = (operation: Delivery.DeliveryError["operation"]) => (cause: unknown) =>
        new Delivery.DeliveryError({ operation, messageId: message.id, cause })
      // The attempt is the receipt: a delivery that outlived its visibility timeout cannot settle the newer one.
      // A statement that reached no row asks why: the row still there (claimed again) means the receipt expired;
      // the row gone means the message is settled already, by this delivery's own earlier try whose answer was lost
      // with the connection (its COMMIT landed, the reply did not) or by a later delivery of it. Either way it will
      // not come back, which is what the caller asked for, so that answer is success, not an error.
      const reached = (operation: Delivery.DeliveryError["operation"]) => (rows: ReadonlyArray<unknown>) =>
        rows.length > 0
          ? Effect.void
          : Effect.flatMap(
            sql`SELECT 1 FROM ${sql(table)} WHERE id = ${id}`,
            (left) =>
              left.length === 0
                ? Effect.void
                : Effect.fail(settleError(operation)("receipt expired: the message was delivered again"))
          )
      // Every statement is guarded by the receipt, so a try lost with the connection (before or after its COMMIT)
      // is run again once the database answers: the caller learns the settlement's real outcome instead of an
      // ambiguous connection error that would leave a settled message looking unsettled.
      const settled = (operation: Delivery.DeliveryError["operation"], statement: Effect.Effect<ReadonlyArray<unknown>, SqlError>) =>
        statement.pipe(
          Effect.flatMap(reached(operation)),
          Effect.retry({ schedule: settleRetry, while: (error) => !(error instanceof Delivery.DeliveryError) })
        )
      // Settled through the driver base (the first settle wins); a settle that still failed may be tried again.
      return Driver.delivery(message, row.attempt, {
        ack: settled("ack", sql`DELETE FROM ${sql(table)} WHERE id = ${id} AND attempt = ${row.attempt} RETURNING id`),
        nack: (delay) =>
          settled(
            "nack",
            sql`UPDATE ${sql(table)} SET visible_at = now() + (${delay}::float8 * interval '1 millisecond')
            WHERE id = ${id} AND attempt = ${row.attempt} RETURNING id`.pipe(
              Effect.tap((rows) => rows.length > 0 ? db.notify(channel, topic) : Effect.void)
            )
          ),
        // The copy is written in the removing transaction, so a row gone means its copy exists (or a later
        // delivery settled the message otherwise).
        deadLetter: (copy) =>
          settled(
            "deadLetter",
            withTransaction(Effect.gen(function*() {
              const removed = yield* sql`DELETE FROM ${sql(table)} WHERE id = ${id} AND attempt = ${row.attempt} RETURNING id`
              if (removed.length > 0) yield* insert(Driver.deadLetterTopic(topic), [copy])
              return removed
            }))
          )
      }, { retryFailedSettle: true })
    }

    const subscribe = (topic: string, options?: Transport.SubscribeOptions): Stream.Stream<Delivery.Delivery, Transport.SubscribeError> =>
      Stream.unwrapScoped(Effect.gen(function*() {
        const group = options?.group ?? "default"
        const wake = yield* PubSub.subscribe(wakeups)
        // Supervised: while the database is unreachable the subscription is `degraded` and retries with a
        // jittered, capped backoff instead of ending; it resumes by itself when the database is back.
        const supervisor = yield* Supervise.make({ name: `transport-postgres:${table}:${topic}:${group}` })
        yield* Effect.addFinalizer(() => supervisor.release)
        const healing = <A>(effect: Effect.Effect<A, SqlError>): Effect.Effect<A> => {
          const attempt: Effect.Effect<A> = Effect.matchEffect(effect, {
            onFailure: (error) => Effect.zipRight(supervisor.degraded(error), Effect.suspend(() => attempt)),
            onSuccess: (a) => Effect.as(supervisor.up, a)
          })
          return attempt
        }
        yield* healing(sql`INSERT INTO ${sql(`${table}_groups`)} (topic, grp) VALUES (${topic}, ${group}) ON CONFLICT DO NOTHING`)
        const waitForWork = Queue.take(wake).pipe(
          Effect.repeat({ until: (t) => t === topic }),
          Effect.timeout(settings.pollInterval),
          Effect.ignore
        )
        const next: Effect.Effect<Chunk.Chunk<Delivery.Delivery>> = Effect.flatMap(
          healing(claim(topic, group)),
          (rows) =>
            rows.length > 0
              ? Effect.succeed(Chunk.fromIterable(rows.map((row) => toDelivery(topic, row))))
              : Effect.zipRight(waitForWork, Effect.suspend(() => next))
        )
        return Stream.repeatEffectChunk(next)
      })).pipe(Stream.mapError((cause) => new Transport.SubscribeError({ topic, cause })))

    const features: Transport.Features = {
      orderedPerKey: settings.orderedPerKey,
      delayedNack: true,
      visibilityTimeout: settings.visibilityTimeout,
      deadLetterTopic: true,
      consumerGroups: true,
      persistent: true
    }

    return { features, publish, subscribe }
  })

export const drop = (table: string): Effect.Effect<void, SqlError | Migrations.InvalidTableName, SqlClient.SqlClient> =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    yield* Migrations.tableName(table)
    yield* sql`DROP TABLE IF EXISTS ${sql(table)}`
    yield* sql`DROP TABLE IF EXISTS ${sql(`${table}_groups`)}`
    yield* sql`DELETE FROM bulwark_migrations WHERE component = ${migrationComponent(table)}`
  })
