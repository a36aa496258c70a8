// The `bulwark webhook` command, run as real processes. Each start-up costs seconds (TypeScript sources run
// through tsx), so the processes start together and the cases are few: the verification logic itself is
// covered in-process by the verifier tests.
import { beforeAll, describe, expect, it } from "@effect/vitest"
import { createHmac } from "node:crypto"
import { Webhook } from "standardwebhooks"
import { Effect } from "effect"
import * as Signing from "../src/Signing.js"
import { runCli } from "../../cli/test/support/bin.js"

interface Result {
  readonly code: number | null
  readonly stdout: string
  readonly stderr: string
}
const run = (args: ReadonlyArray<string>, stdin: string): Promise<Result> =>
  runCli(["webhook", ...args], { stdin }).then(({ code, stderr, stdout }) => ({ code, stdout: stdout.trim(), stderr: stderr.trim() }))

const secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
const body = JSON.stringify({ type: "user.created", data: { id: 1 } })
const now = Math.floor(Date.now() / 1000)
const signature = new Webhook(secret).sign("msg_x", new Date(now * 1000), body)
const standardArgs = ["verify", "--secret", secret, "--id", "msg_x", "--timestamp", String(now), "--signature", signature]

const cases = {
  sign: [["sign", "--secret", secret, "--id", "msg_cli", "--timestamp", String(now)], body],
  keyringHeaders: [[
    "verify", "--secret", Signing.generateSecret(), "--secret", secret,
    "--header", "Webhook-Id: msg_x", "--header", `webhook-timestamp: ${now}`, "--header", `webhook-signature: ${signature}`
  ], body],
  stale: [[...standardArgs, "--now", String(now + 301)], body],
  nothingToVerify: [["verify", "--secret", secret], body],
  // GitHub's documented test vector: secret, raw body and X-Hub-Signature-256 only, no delivery id
  githubNoId: [[
    "verify", "--scheme", "github", "--secret", "It's a Secret to Everybody",
    "--signature", "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
  ], "Hello, World!"],
  githubHeaderNoId: [[
    "verify", "--scheme", "github", "--secret", "gh",
    "--header", `X-Hub-Signature-256: sha256=${createHmac("sha256", "gh").update(body).digest("hex")}`
  ], body],
  githubWrongBody: [[
    "verify", "--scheme", "github", "--secret", "It's a Secret to Everybody",
    "--signature", "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
  ], "Hello, World?"]
} satisfies Record<string, readonly [ReadonlyArray<string>, string]>

let results: Record<keyof typeof cases, Result>

beforeAll(async () => {
  const entries = await Promise.all(Object.entries(cases).map(async ([name, [args, stdin]]) => [name, await run(args, stdin)] as const))
  results = Object.fromEntries(entries) as typeof results
}, 120_000)

describe("bulwark webhook", () => {
  it("sign reads the body on stdin and prints headers the official library verifies", () => {
    expect(results.sign.code).toBe(0)
    const headers = Object.fromEntries(results.sign.stdout.split("\n").map((line) => {
      const i = line.indexOf(": ")
      return [line.slice(0, i), line.slice(i + 2)]
    }))
    expect(headers["webhook-id"]).toBe("msg_cli")
    expect(headers["webhook-timestamp"]).toBe(String(now))
    expect(new Webhook(secret).verify(body, headers)).toEqual(JSON.parse(body))
  })

  it("verify exits 0 and prints valid (several --secret form a keyring; --header form)", () => {
    expect(results.keyringHeaders).toMatchObject({ code: 0, stdout: "valid" })
  })

  it("verify exits 1 with the typed reason (here a stale timestamp judged at --now)", () => {
    expect(results.stale.code).toBe(1)
    expect(results.stale.stderr).toMatch(/^TimestampOutOfTolerance/)
  })

  it("verify --scheme github needs no delivery id (GitHub's documented test vector; --signature and --header forms)", () => {
    expect(results.githubNoId).toMatchObject({ code: 0, stdout: "valid" })
    expect(results.githubHeaderNoId).toMatchObject({ code: 0, stdout: "valid" })
    expect(results.githubWrongBody.code).toBe(1)
    expect(results.githubWrongBody.stderr).toMatch(/^NoMatchingSignature/)
  })

  it("bad usage exits 2", () => {
    expect(results.nothingToVerify.code).toBe(2)
    expect(results.nothingToVerify.stderr).toContain("--signature")
  })
})

describe("Cli.requestHeaders (the flags verify turns into headers)", () => {
  const payload = new TextEncoder().encode(body)
  it("maps --signature/--id per scheme so stripe and github requests verify", async () => {
    const { requestHeaders } = await import("../src/Cli.js")
    const Verifier = await import("../src/Verifier.js")
    const stripeHeader = Effect.runSync(Signing.stripe(["whsec_s"], payload, now))
    const stripe = requestHeaders("stripe", { header: [], signature: stripeHeader })
    expect(stripe).toEqual({ "stripe-signature": stripeHeader })
    expect(Verifier.check("stripe", "cli", ["whsec_s"], { headers: stripe as Record<string, string>, body: payload }, now * 1000, 300)).toMatchObject({ scheme: "stripe" })
    const github = requestHeaders("github", { header: [], signature: Signing.github("gh", payload), id: "d-1" })
    expect(Verifier.check("github", "cli", ["gh"], { headers: github as Record<string, string>, body: payload }, now * 1000, 300)).toMatchObject({ id: "d-1" })
    expect(requestHeaders("standard", { header: ["Webhook-Id: a:b"], timestamp: 5 })).toEqual({ "webhook-id": "a:b", "webhook-timestamp": "5" })
    expect(requestHeaders("standard", { header: ["nocolon"] })).toMatch(/--header/)
    expect(requestHeaders("standard", { header: [] })).toMatch(/--signature/)
  })
})
