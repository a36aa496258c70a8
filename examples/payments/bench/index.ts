/**
 * The payments soak, under `npm run bench` (or `npm run bench -- payments`). It is long — the whole flagship
 * pipeline for 100 000 webhooks on PostgreSQL — so it runs only when `BULWARK_BENCH_SOAK=1`; otherwise it says
 * how to start it and succeeds. It runs `soak.ts` in a child process with the heap capped at 256 MB (that cap is
 * what the soak proves the flagship lives within) and `--expose-gc` (to read post-GC heap floors).
 *
 * Environment: `PAYMENTS_SOAK_WEBHOOKS` (default 100 000), `BULWARK_DATABASE_URL` (default the local
 * PostgreSQL, database `test`), `PAYMENTS_SOAK_HEAP_MB` (default 256).
 */
import { spawnSync } from "node:child_process"
import { dirname, join } from "node:path"
import { fileURLToPath } from "node:url"

if (process.env.BULWARK_BENCH_SOAK !== "1") {
  console.log(
    "payments soak skipped: set BULWARK_BENCH_SOAK=1 to run 100 000 webhooks through the flagship on PostgreSQL " +
      "under a 256 MB heap (PAYMENTS_SOAK_WEBHOOKS for another count); see docs/benchmarks.md for how long it takes"
  )
  process.exit(0)
}

const heapMb = process.env.PAYMENTS_SOAK_HEAP_MB ?? "256"
const soak = join(dirname(fileURLToPath(import.meta.url)), "soak.ts")
const result = spawnSync(
  process.execPath,
  [`--max-old-space-size=${heapMb}`, "--expose-gc", "--conditions=@bulwark/source", "--import", "tsx", soak],
  { stdio: "inherit" }
)
process.exit(result.status ?? 1)
