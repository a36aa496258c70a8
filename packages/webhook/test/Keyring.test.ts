import { describe, expect, it } from "@effect/vitest"
import { ConfigProvider, Duration, Effect, Exit, Layer, TestClock } from "effect"
import * as Keyring from "../src/Keyring.js"
import * as ReplayGuard from "../src/ReplayGuard.js"
import * as Signing from "../src/Signing.js"
import * as Verifier from "../src/Verifier.js"

const body = new TextEncoder().encode("{}")

describe("Keyring", () => {
  it.effect("layerConfig reads comma-separated secrets per source from Config", () =>
    Effect.gen(function*() {
      const keyring = yield* Keyring.Keyring
      expect(yield* keyring.secrets("stripe")).toEqual(["whsec_new", "whsec_old"])
      expect(yield* keyring.secrets("git-hub")).toEqual(["s1"])
      const missing = yield* Effect.flip(keyring.secrets("nobody"))
      expect(missing._tag).toBe("UnknownKey")
    }).pipe(Effect.provide(Keyring.layerConfig(["stripe", "git-hub"]).pipe(Layer.provide(Layer.setConfigProvider(
      ConfigProvider.fromMap(new Map([["BULWARK_WEBHOOK_STRIPE_SECRETS", "whsec_new, whsec_old"], ["BULWARK_WEBHOOK_GIT_HUB_SECRETS", "s1"]]))
    ))))))

  it.effect("layerConfig fails with a ConfigError when a source is not configured", () =>
    Effect.gen(function*() {
      const exit = yield* Effect.exit(Effect.provide(Keyring.Keyring, Keyring.layerConfig(["absent"]).pipe(
        Layer.provide(Layer.setConfigProvider(ConfigProvider.fromMap(new Map())))
      )))
      expect(Exit.isFailure(exit)).toBe(true)
    }))

  it.effect("rotation without downtime: old, both, new — every step verifies what the sender signs", () =>
    Effect.gen(function*() {
      const keyring = yield* Keyring.Keyring
      const verifier = yield* Verifier.fromKeyring("standard", "acme")
      const oldSecret = Signing.generateSecret()
      const newSecret = Signing.generateSecret()
      yield* keyring.set("acme", [oldSecret])
      const byOld = { ...(yield* Signing.standard([oldSecret], { id: "m1", body })) }
      const byNew = { ...(yield* Signing.standard([newSecret], { id: "m2", body })) }
      expect((yield* verifier.verify({ headers: byOld, body })).id).toBe("m1")
      yield* keyring.add("acme", newSecret)
      expect(yield* keyring.secrets("acme")).toEqual([newSecret, oldSecret])
      expect((yield* verifier.verify({ headers: byOld, body })).id).toBe("m1")
      expect((yield* verifier.verify({ headers: byNew, body })).id).toBe("m2")
      yield* keyring.remove("acme", oldSecret)
      expect((yield* verifier.verify({ headers: byNew, body })).id).toBe("m2")
      expect((yield* Effect.flip(verifier.verify({ headers: byOld, body })))._tag).toBe("NoMatchingSignature")
      yield* keyring.remove("acme", newSecret)
      expect((yield* Effect.flip(verifier.verify({ headers: byNew, body })))._tag).toBe("UnknownKey")
    }).pipe(Effect.provide(Keyring.layer())))
})

describe("ReplayGuard (memory)", () => {
  it.effect("claim / commit / release, with expiry on the Clock", () =>
    Effect.gen(function*() {
      const guard = yield* ReplayGuard.ReplayGuard
      expect(yield* guard.claim("a", "30 seconds")).toBe("claimed")
      expect(yield* guard.claim("a", "30 seconds")).toBe("in-flight")
      yield* guard.release("a")
      expect(yield* guard.claim("a", "30 seconds")).toBe("claimed")
      yield* guard.commit("a", "1 hour")
      expect(yield* guard.claim("a", "30 seconds")).toBe("seen")
      yield* guard.release("a") // releasing a committed key does not forget it
      expect(yield* guard.claim("a", "30 seconds")).toBe("seen")
      yield* TestClock.adjust(Duration.hours(1))
      expect(yield* guard.claim("a", "30 seconds")).toBe("claimed")
      // an abandoned claim expires after its lease
      expect(yield* guard.claim("b", "30 seconds")).toBe("claimed")
      yield* TestClock.adjust("31 seconds")
      expect(yield* guard.claim("b", "30 seconds")).toBe("claimed")
      expect(yield* ReplayGuard.firstSeen("c", "1 minute")).toBe(true)
      expect(yield* ReplayGuard.firstSeen("c", "1 minute")).toBe(false)
    }).pipe(Effect.provide(ReplayGuard.layerMemory())))

  it.effect("forgets the oldest entries beyond maxEntries", () =>
    Effect.gen(function*() {
      for (let i = 0; i < 5; i++) expect(yield* ReplayGuard.firstSeen(`k${i}`, "1 hour")).toBe(true)
      expect(yield* ReplayGuard.firstSeen("k4", "1 hour")).toBe(false)
      expect(yield* ReplayGuard.firstSeen("k0", "1 hour")).toBe(true)
    }).pipe(Effect.provide(ReplayGuard.layerMemory({ maxEntries: 3 }))))

  it.effect("Verifier.withReplayGuard refuses a replayed GitHub delivery", () =>
    Effect.gen(function*() {
      const verifier = yield* Verifier.withReplayGuard(Verifier.github(["s"]))
      const headers = { "x-hub-signature-256": Signing.github("s", body), "x-github-delivery": "d-1" }
      expect((yield* verifier.verify({ headers, body })).id).toBe("d-1")
      const replay = yield* Effect.flip(verifier.verify({ headers, body }))
      expect(replay._tag).toBe("Replayed")
    }).pipe(Effect.provide(ReplayGuard.layerMemory())))

  it.effect("Verifier.withReplayGuard keys on the delivery id when present, else on the signature", () =>
    Effect.gen(function*() {
      const verifier = yield* Verifier.withReplayGuard(Verifier.github(["s"]))
      const signature = Signing.github("s", body)
      // two deliveries of the same body with different ids are two deliveries
      expect((yield* verifier.verify({ headers: { "x-hub-signature-256": signature, "x-github-delivery": "d-1" }, body })).id).toBe("d-1")
      expect((yield* verifier.verify({ headers: { "x-hub-signature-256": signature, "x-github-delivery": "d-2" }, body })).id).toBe("d-2")
      // without an id, the first sighting of the signature passes and the second is a replay
      expect((yield* verifier.verify({ headers: { "x-hub-signature-256": signature }, body })).id).toBeUndefined()
      const replay = yield* Effect.flip(verifier.verify({ headers: { "x-hub-signature-256": signature }, body }))
      expect(replay).toMatchObject({ _tag: "Replayed", id: signature })
    }).pipe(Effect.provide(ReplayGuard.layerMemory())))
})
