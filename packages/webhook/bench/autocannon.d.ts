// Minimal typings for the parts of autocannon the benchmark uses (the package ships none).
declare module "autocannon" {
  namespace autocannon {
    interface Result {
      readonly requests: { readonly average: number; readonly total: number }
      /** Seconds the run took, to 10 ms. */
      readonly duration: number
      readonly latency: { readonly p99: number }
      readonly non2xx: number
      readonly statusCodeStats?: Record<string, { readonly count: number }>
    }
  }
  function autocannon(
    options: Record<string, unknown>,
    callback: (error: unknown, result: autocannon.Result) => void
  ): { on(event: "response", listener: (...args: ReadonlyArray<unknown>) => void): unknown }
  export default autocannon
}
