import { Keyring, Sender, Signing, Verifier } from "@bulwark/webhook"
import { Effect } from "effect"

/** Step 1 (receiving side): accept the new secret alongside the old one. Either verifies. */
export const acceptNewSecret = (source: string, next: string) =>
  Effect.flatMap(Keyring.Keyring, (keyring) => keyring.add(source, next))

/** Step 3, once the provider signs only with the new secret: retire the old one. */
export const retireOldSecret = (source: string, previous: string) =>
  Effect.flatMap(Keyring.Keyring, (keyring) => keyring.remove(source, previous))

/** Verifiers made with `fromKeyring` read the keyring on every request, so each step applies at once. */
export const verifier = Verifier.fromKeyring("standard", "payments")

/** Sending side: during a rotation, sign with both; the receiver accepts whichever it knows. */
export const deliver = (body: Uint8Array, next: string, previous: string) =>
  Effect.flatMap(Sender.Sender, (sender) =>
    sender.send({ id: "ep_orders", url: "https://partner.example/hooks", secrets: [next, previous] }, { id: "msg_1", body }))

/** A fresh secret to hand out. */
export const newSecret = Signing.generateSecret()
