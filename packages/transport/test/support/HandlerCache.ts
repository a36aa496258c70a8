/**
 * For the drivers over an AWS SDK client built with `cacheMiddleware`: watches which calls the client makes and
 * how often each command resolves its middleware stack. The cache holds only for calls made without per-call
 * options, and one call with options empties it, so each such call would resolve its command's whole stack again.
 */
import { expect, vi } from "@effect/vitest"
import { Effect, type Scope } from "effect"

// A command class of an AWS SDK client: what the watch spies on and counts.
type CommandClass = (abstract new(...args: Array<any>) => object) & { readonly prototype: { resolveMiddleware: (...args: Array<any>) => unknown } }

/** What {@link watch} saw. */
export interface Watch {
  /**
   * Expects no call to have passed per-call options, each command to have been sent more than `moreThan` times
   * (default 2) and to have resolved its middleware at most once (a call before the watch may have done it).
   */
  readonly expectResolvedOnce: (moreThan?: (command: CommandClass) => number) => void
}

/** Spies on `client.prototype.send` and on each command's `resolveMiddleware` until the scope closes. */
export const watch = (
  client: { readonly prototype: { send: (...args: Array<any>) => unknown } },
  commands: ReadonlyArray<CommandClass>
): Effect.Effect<Watch, never, Scope.Scope> =>
  Effect.map(
    Effect.acquireRelease(
      Effect.sync(() => ({
        resolved: commands.map((command) => vi.spyOn(command.prototype, "resolveMiddleware")),
        sends: vi.spyOn(client.prototype, "send")
      })),
      ({ resolved, sends }) =>
        Effect.sync(() => {
          for (const spy of [...resolved, sends]) spy.mockRestore()
        })
    ),
    ({ resolved, sends }) => ({
      expectResolvedOnce: (moreThan = () => 2) => {
        const withOptions = sends.mock.calls.filter((call) => call.length > 1 && call[1] !== undefined)
        expect(withOptions.map(([sent]) => (sent as object).constructor.name)).toEqual([])
        commands.forEach((command, i) => {
          expect(sends.mock.calls.filter(([sent]) => sent instanceof command).length, command.name).toBeGreaterThan(moreThan(command))
          expect(resolved[i]!.mock.calls.length, command.name).toBeLessThanOrEqual(1)
        })
      }
    })
  )
