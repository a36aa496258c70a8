/** Test helpers: unique stream prefixes, their clean-up, and a TCP proxy whose connections a test can cut. */
import net from "node:net"
import { connect } from "nats"

/** The server every test talks to. */
export const natsUrl = process.env["BULWARK_NATS_URL"] ?? "nats://127.0.0.1:4222"

const hostPort = () => {
  const url = new URL(natsUrl)
  return { host: url.hostname, port: Number(url.port || 4222) }
}

/** A stream prefix no other run uses. */
export const uniquePrefix = (label: string) =>
  `bwt-${label}-${Date.now().toString(36)}-${Math.floor(Math.random() * 1e6).toString(36)}`

/** Deletes every stream whose name starts with `<prefix>_`; answers how many. */
export const deleteStreams = async (prefix: string): Promise<number> => {
  const nc = await connect({ servers: natsUrl, timeout: 5_000 })
  try {
    const jsm = await nc.jetstreamManager()
    const names: Array<string> = []
    for await (const name of jsm.streams.names()) {
      if (name.startsWith(`${prefix}_`)) names.push(name)
    }
    for (const name of names) await jsm.streams.delete(name)
    return names.length
  } finally {
    await nc.close()
  }
}

/** A TCP proxy in front of the NATS server: `cut()` drops every live connection, `pause()` refuses new ones. */
export interface Proxy {
  readonly url: string
  readonly port: number
  /** Connections accepted so far. */
  readonly accepted: () => number
  readonly cut: () => void
  /**
   * The live connections stop passing what the server sends (it is dropped, as when a connection dies with
   * bytes in flight); what the client sends still reaches the server. New connections are not muted.
   */
  readonly mute: () => void
  readonly pause: () => Promise<void>
  readonly resume: () => Promise<void>
  readonly close: () => Promise<void>
}

export const startProxy = async (): Promise<Proxy> => {
  const target = hostPort()
  const sockets = new Set<net.Socket>()
  const muted = new WeakSet<net.Socket>()
  let accepted = 0
  const onConnection = (client: net.Socket) => {
    accepted++
    const upstream = net.connect(target.port, target.host)
    sockets.add(client)
    sockets.add(upstream)
    const drop = () => {
      client.destroy()
      upstream.destroy()
      sockets.delete(client)
      sockets.delete(upstream)
    }
    client.on("error", drop).on("close", drop)
    upstream.on("error", drop).on("close", drop)
    client.pipe(upstream)
    upstream.on("data", (chunk: Buffer) => {
      if (!muted.has(upstream)) client.write(chunk)
    })
  }
  let server = net.createServer(onConnection)
  const listen = (port: number) =>
    new Promise<number>((resolve, reject) => {
      server.once("error", reject)
      server.listen(port, "127.0.0.1", () => resolve((server.address() as net.AddressInfo).port))
    })
  const port = await listen(0)
  const cut = () => {
    for (const socket of sockets) socket.destroy()
    sockets.clear()
  }
  const stopListening = () => new Promise<void>((resolve) => server.close(() => resolve()))
  return {
    url: `nats://127.0.0.1:${port}`,
    port,
    accepted: () => accepted,
    cut,
    mute: () => {
      for (const socket of sockets) muted.add(socket)
    },
    pause: async () => {
      const closed = stopListening()
      cut()
      await closed
    },
    resume: async () => {
      server = net.createServer(onConnection)
      await listen(port)
    },
    close: async () => {
      const closed = server.listening ? stopListening() : Promise.resolve()
      cut()
      await closed
    }
  }
}

/** A server that accepts TCP connections and never speaks: connecting to it must time out, not hang. */
export const startSilentServer = async () => {
  const sockets = new Set<net.Socket>()
  const server = net.createServer((socket) => {
    sockets.add(socket)
    socket.on("error", () => sockets.delete(socket))
  })
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()))
  const port = (server.address() as net.AddressInfo).port
  return {
    url: `nats://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy()
        server.close(() => resolve())
      })
  }
}

/** A local port nothing listens on. */
export const closedPort = async (): Promise<number> => {
  const server = net.createServer()
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()))
  const port = (server.address() as net.AddressInfo).port
  await new Promise<void>((resolve) => server.close(() => resolve()))
  return port
}
