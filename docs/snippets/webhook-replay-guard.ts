import * as SqlIdempotencyStore from "@bulwark/idempotency/IdempotencyStore/Sql"
import * as IdempotencyGuard from "@bulwark/webhook/ReplayGuard/Idempotency"
import { Layer } from "effect"

// Webhook ids become idempotency keys under the prefix `webhook:`; each is remembered for `dedupeTtl`.
export const ReplayGuardLive = IdempotencyGuard.layer().pipe(Layer.provide(SqlIdempotencyStore.layer()))
