/**
 * Where traces go. `@bulwark/tracing`'s `Otel.layerConfig` reads the standard `OTEL_*` variables
 * (`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_SERVICE_NAME`, …) and exports the run's spans — ingress, order
 * transaction, relay, every shipping attempt and retry — to your collector.
 *
 * The OpenTelemetry SDK is a large module graph, so it is imported only when an `OTEL_*` variable is set;
 * without one the layer is empty and the run starts that much sooner.
 */
import { Data, Effect, Layer } from "effect"

/** The tracing module could not be loaded. */
export class TelemetryUnavailable extends Data.TaggedError("TelemetryUnavailable")<{ readonly cause: unknown }> {
  override get message(): string {
    return `OTEL_* is set but @bulwark/tracing could not be loaded: ${this.cause instanceof Error ? this.cause.message : String(this.cause)}`
  }
}

/** Whether any `OTEL_*` variable is set. */
export const configured = (env: Readonly<Record<string, string | undefined>>): boolean =>
  Object.entries(env).some(([name, value]) => name.startsWith("OTEL_") && value !== undefined && value !== "")

/** The example's telemetry: OpenTelemetry export when configured, nothing otherwise. */
export const layer: Layer.Layer<never, TelemetryUnavailable> = Layer.unwrapEffect(
  configured(process.env)
    ? Effect.map(
      Effect.tryPromise({ try: () => import("@bulwark/tracing/Otel"), catch: (cause) => new TelemetryUnavailable({ cause }) }),
      (Otel) => Otel.layerConfig({ serviceName: "bulwark-payments-example" })
    )
    : Effect.succeed(Layer.empty)
)
