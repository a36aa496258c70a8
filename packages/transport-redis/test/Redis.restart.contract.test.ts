// Issue 17: the transport fault suite over a private Redis server (append-only file, fsync on every write),
// crashed with SIGKILL and restarted mid-stream.
import * as Contract from "@bulwark/transport/Contract"
import { RedisTransport } from "../src/index.js"
import * as PrivateRedis from "./support/PrivateRedis.js"

Contract.faultSuite(
  "redis streams",
  () => PrivateRedis.start(),
  (redis) =>
    RedisTransport.layer({
      url: redis.url,
      keyPrefix: "fault:",
      visibilityTimeout: "1 second",
      connectTimeout: "2 seconds"
    }),
  { messages: 200 }
)
