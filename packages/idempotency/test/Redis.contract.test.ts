import { Redis as Client } from "ioredis"
import { afterAll } from "vitest"
import * as Redis from "../src/IdempotencyStore/Redis.js"
import { suite } from "./contract.js"

const url = process.env.BULWARK_TEST_REDIS_URL ?? "redis://127.0.0.1:6379"
const prefix = `bulwark:idem-test:${Date.now().toString(36)}:`

suite("redis", Redis.layer({ url, prefix }), { propertyRuns: 15 })

afterAll(async () => {
  const client = new Client(url)
  const keys = await client.keys(`${prefix}*`)
  if (keys.length > 0) await client.del(...keys)
  await client.quit()
})
