/**
 * A counting semaphore that hands a released permit straight to the longest waiter.
 *
 * Effect's `Semaphore` (3.22) wakes every waiter on a release and lets them race for the permit; a waiter
 * that loses re-enters `take` *inside* its previous wait, so each lost race leaves frames (and the old
 * waiter's closures) on the waiting fiber's stack. Under steady contention — an ordered pipeline with more
 * busy subjects than handler slots — a worker's stack and the heap grew with every delivery. Here a permit
 * is never free while someone waits: `release` transfers it, so a waiter resumes once, with nothing nested.
 */
import { Deferred, Effect, Exit, FiberId } from "effect"

interface Waiter {
  granted: boolean
  readonly signal: Deferred.Deferred<void>
}

/** A FIFO permit gate. */
export interface Gate {
  /** Runs `self` holding one permit; waits (interruptibly, first come first served) for one. */
  readonly withPermit: <A, E, R>(self: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>
  /** Fibers waiting for a permit. */
  readonly waiting: () => number
}

/** Creates a gate with `permits` permits. */
export const make = (permits: number): Gate => {
  let available = Math.max(1, permits)
  let waiters: Array<Waiter> = []
  let head = 0

  const next = (): Waiter | undefined => {
    if (head === waiters.length) return undefined
    const waiter = waiters[head]!
    waiters[head++] = undefined as unknown as Waiter
    // Compact the consumed prefix now and then, so the array does not keep every waiter that ever waited.
    if (head === waiters.length) {
      waiters = []
      head = 0
    } else if (head >= 1024 && head * 2 >= waiters.length) {
      waiters = waiters.slice(head)
      head = 0
    }
    return waiter
  }

  const releaseUnsafe = (): void => {
    const waiter = next()
    if (waiter === undefined) {
      available++
      return
    }
    waiter.granted = true
    Deferred.unsafeDone(waiter.signal, Exit.void)
  }

  const take: Effect.Effect<void> = Effect.suspend(() => {
    if (available > 0) {
      available--
      return Effect.void
    }
    const waiter: Waiter = { granted: false, signal: Deferred.unsafeMake<void>(FiberId.none) }
    waiters.push(waiter)
    return Effect.onInterrupt(Deferred.await(waiter.signal), () =>
      Effect.sync(() => {
        // Granted just as it was interrupted: pass the permit on. Still queued: leave the queue.
        if (waiter.granted) return releaseUnsafe()
        const index = waiters.indexOf(waiter, head)
        if (index >= 0) waiters.splice(index, 1)
      }))
  })

  const release = Effect.sync(releaseUnsafe)

  return {
    withPermit: (self) => Effect.uninterruptibleMask((restore) => Effect.zipRight(restore(take), Effect.ensuring(restore(self), release))),
    waiting: () => waiters.length - head
  }
}
