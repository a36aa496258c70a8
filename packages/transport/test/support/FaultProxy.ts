/**
 * A TCP proxy in front of a private test server, for the fault suite of a driver whose service cannot be
 * restarted without losing what it holds (an in-memory emulator of a managed cloud service). `cut` is what a
 * client sees when the service's endpoint fails over or the network drops: every open connection is reset
 * mid-stream, and for a while new connections are refused; then the endpoint answers again, with its data.
 */
import { Failure } from "@bulwark/core"
import type { OutgoingMessage, PublishError } from "@bulwark/transport/Transport"
import { expect } from "@effect/vitest"
import { type Cause, Duration, Effect, Either, ExecutionStrategy, Exit, Scope } from "effect"
import * as net from "node:net"

const sleep = (millis: number) => new Promise((resolve) => setTimeout(resolve, millis))

/** A running proxy. */
export interface FaultProxy {
  /** The loopback port clients connect to. */
  readonly port: number
  /** Connections reset since the proxy started. */
  readonly resets: () => number
  /** Resets every open connection, refuses new ones for `downMillis`, then accepts again on the same port. */
  readonly cut: (downMillis: number) => Promise<void>
  /**
   * A service that hangs: while stalled, connections stay open and new ones are accepted, but nothing a client
   * sends is passed on (so no answer comes); `stall(false)` passes everything held on.
   */
  readonly stall: (stalled: boolean) => void
  /** Closes the proxy and every connection through it. Safe to call twice. */
  readonly destroy: () => Promise<void>
}

/** Starts a proxy on a port the OS picks, forwarding to `target` on the loopback interface. */
export const start = async (target: { readonly port: number; readonly host?: string }): Promise<FaultProxy> => {
  const open = new Set<net.Socket>()
  const clients = new Set<net.Socket>()
  let reset = 0
  let closed = false
  let stalled = false
  const accept = (client: net.Socket) => {
    const upstream = net.connect(target.port, target.host ?? "127.0.0.1")
    open.add(client)
    open.add(upstream)
    clients.add(client)
    client.on("close", () => clients.delete(client))
    if (stalled) client.pause()
    const drop = () => {
      open.delete(client)
      open.delete(upstream)
      client.destroy()
      upstream.destroy()
    }
    client.on("error", drop).on("close", drop)
    upstream.on("error", drop).on("close", drop)
    client.pipe(upstream)
    upstream.pipe(client)
    // `pipe` resumes a paused stream: a stalled proxy keeps this one paused.
    if (stalled) client.pause()
  }
  const listen = (server: net.Server, port: number) =>
    new Promise<number>((resolve, reject) => {
      server.once("error", reject)
      server.listen(port, "127.0.0.1", () => {
        server.off("error", reject)
        resolve((server.address() as net.AddressInfo).port)
      })
    })
  let server = net.createServer(accept)
  const port = await listen(server, 0)
  const closeServer = (s: net.Server) => new Promise<void>((resolve) => s.close(() => resolve()))
  const resetAll = () => {
    for (const socket of open) {
      // A reset (RST), not a polite FIN: the client learns of it as a broken connection, mid-request.
      socket.resetAndDestroy()
      reset++
    }
    open.clear()
  }
  const cut = async (downMillis: number) => {
    const down = server
    const closing = closeServer(down)
    resetAll()
    await closing
    await sleep(downMillis)
    if (closed) return
    server = net.createServer(accept)
    // The port was just freed by this process; another process taking it in between is a test-machine accident.
    for (let tries = 0;; tries++) {
      try {
        await listen(server, port)
        return
      } catch (error) {
        if (tries >= 50) throw error
        await sleep(100)
      }
    }
  }
  const destroy = async () => {
    if (closed) return
    closed = true
    const closing = closeServer(server)
    resetAll()
    await closing
  }
  const stall = (on: boolean) => {
    stalled = on
    for (const client of clients) on ? client.pause() : client.resume()
  }
  return { port, resets: () => reset, cut, stall, destroy }
}

/**
 * The fault suite's private service made of a started server and a proxy in front of it: `restart` is a `cut`
 * that must reset at least one open connection (else nothing was in flight and the test proved nothing), and
 * `destroy` stops both.
 */
export const privateService = async (server: {
  readonly port: number
  readonly url: (port: number) => string
  readonly destroy: () => Promise<void>
}, downMillis = 1_000): Promise<{ url: string; restart: () => Promise<void>; destroy: () => Promise<void> }> => {
  const proxy = await start({ port: server.port }).catch(async (error) => {
    await server.destroy()
    throw error
  })
  return {
    url: server.url(proxy.port),
    restart: async () => {
      const before = proxy.resets()
      await proxy.cut(downMillis)
      if (proxy.resets() === before) throw new Error("the cut found no open connection to reset")
    },
    destroy: async () => {
      await proxy.destroy()
      await server.destroy()
    }
  }
}

/**
 * The check a driver's "service that stops answering" test makes, through a proxy in front of its service:
 * `make` builds the driver against `proxyPort`; a publish works, then (the proxy stalled) a publish fails with a
 * transient `PublishError` within `within` instead of hanging, then (the proxy passing again) a publish works.
 */
export const expectStalledPublishFails = <E, R>(options: {
  readonly port: number
  readonly make: (proxyPort: number) => Effect.Effect<{
    readonly publish: (topic: string, messages: ReadonlyArray<OutgoingMessage>) => Effect.Effect<void, PublishError>
  }, E, R>
  readonly topic: string
  readonly message: (id: string) => OutgoingMessage
  readonly within: Duration.DurationInput
  /** When set, the driver is also closed while the proxy stalls, which must end within this bound. */
  readonly closeWithin?: Duration.DurationInput
}): Effect.Effect<void, E | PublishError | Cause.TimeoutException, R | Scope.Scope> =>
  Effect.gen(function*() {
    const proxy = yield* Effect.acquireRelease(Effect.promise(() => start({ port: options.port })), (p) => Effect.promise(p.destroy))
    const driverScope = yield* Scope.fork(yield* Effect.scope, ExecutionStrategy.sequential)
    const driver = yield* Scope.extend(options.make(proxy.port), driverScope)
    yield* driver.publish(options.topic, [options.message("before")])
    proxy.stall(true)
    const started = Date.now()
    const outcome = yield* driver.publish(options.topic, [options.message("during")]).pipe(
      Effect.either,
      Effect.timeout(Duration.sum(options.within, Duration.seconds(20)))
    )
    expect(Either.isLeft(outcome)).toBe(true)
    if (Either.isRight(outcome)) return
    const error = outcome.left
    expect(error._tag).toBe("PublishError")
    expect((yield* Failure.classify(error)).classification).toBe("transient")
    expect(Date.now() - started).toBeLessThan(Duration.toMillis(options.within))
    proxy.stall(false)
    yield* driver.publish(options.topic, [options.message("after")])
    if (options.closeWithin === undefined) return
    proxy.stall(true)
    const closing = Date.now()
    yield* Scope.close(driverScope, Exit.void).pipe(Effect.timeout(Duration.sum(options.closeWithin, Duration.seconds(20))))
    expect(Date.now() - closing).toBeLessThan(Duration.toMillis(options.closeWithin))
    proxy.stall(false)
  })
