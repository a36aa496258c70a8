/**
 * Wires Effect's tracer and metrics to the OpenTelemetry Node SDK (`@opentelemetry/sdk-node`).
 *
 * {@link layerConfig} is what applications use: it reads the standard `OTEL_*` environment variables
 * (`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_SERVICE_NAME`, `OTEL_TRACES_EXPORTER`, `OTEL_METRICS_EXPORTER`,
 * `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_PROPAGATORS`, `OTEL_SDK_DISABLED`, …) exactly as the SDK documents them,
 * and is a silent no-op when none is set, so a program can always provide it.
 *
 * The SDK registers the global OpenTelemetry providers while the layer is alive and flushes and unregisters
 * them when its scope closes: telemetry still buffered is exported before the process exits.
 *
 * Nothing here instruments anything: every Bulwark package emits its own spans and metrics through Effect
 * (`@bulwark/core`'s `Telemetry` vocabulary); this layer only decides where they go. Sampling is the SDK's,
 * from `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG` (default `parentbased_always_on`). Metrics leave in a
 * form any backend reads right: `*_total` counters as monotonic sums, `*_seconds` histograms with unit `s`, and
 * Effect's own runtime metrics (`effect_fiber_*`, …) left out unless asked for.
 */
import * as OtelMetrics from "@effect/opentelemetry/Metrics"
import * as OtelResource from "@effect/opentelemetry/Resource"
import * as OtelTracer from "@effect/opentelemetry/Tracer"
import * as OtelApi from "@opentelemetry/api"
import { OTLPMetricExporter as JsonMetricExporter } from "@opentelemetry/exporter-metrics-otlp-http"
import { OTLPMetricExporter as ProtoMetricExporter } from "@opentelemetry/exporter-metrics-otlp-proto"
import { metrics as SdkMetrics, NodeSDK, type tracing as SdkTracing } from "@opentelemetry/sdk-node"
import { Duration, Effect, Layer, Tracer } from "effect"

const ATTR_SERVICE_NAME = "service.name"

/** Explicit SDK settings; {@link layerConfig} derives them from the environment. */
export interface Options {
  /** `service.name` when `OTEL_SERVICE_NAME` does not say otherwise. */
  readonly serviceName?: string
  /** `service.version` resource attribute. */
  readonly serviceVersion?: string
  /** Span processors to use instead of those `OTEL_TRACES_EXPORTER` describes (tests pass an in-memory one). */
  readonly spanProcessors?: ReadonlyArray<SdkTracing.SpanProcessor>
  /** Metric exporters to use instead of those `OTEL_METRICS_EXPORTER` describes. */
  readonly metricExporters?: ReadonlyArray<SdkMetrics.PushMetricExporter>
  /** How often metrics are pushed. Default `OTEL_METRIC_EXPORT_INTERVAL` or 60 s. */
  readonly metricExportInterval?: Duration.DurationInput
  /** How long the final flush may take when the layer is released. Default 5 s. */
  readonly shutdownTimeout?: Duration.DurationInput
  /** Also export Effect's runtime metrics (`effect_fiber_*`, …). Default `false`. */
  readonly runtimeMetrics?: boolean
  /**
   * OpenTelemetry instrumentations to register (`@opentelemetry/instrumentation-http`, `-pg`, `-ioredis`, …).
   * Their spans join the trace of the Effect span that calls the library. Default none.
   */
  readonly instrumentations?: Instrumentations
  /**
   * Makes Effect's current span the active OpenTelemetry context while a fiber runs, so plain OpenTelemetry
   * instrumentations parent their spans under it. Default `true`; `false` registers no context manager.
   */
  readonly bridgeContext?: boolean
}

/** What `NodeSDK` accepts as instrumentations. */
export type Instrumentations = NonNullable<NonNullable<ConstructorParameters<typeof NodeSDK>[0]>["instrumentations"]>

/**
 * Effect's OpenTelemetry tracer, with the one change that makes the AsyncLocalStorage context manager safe: a
 * fiber running without a span runs in the root context, not in whatever context the promise that woke it was
 * resolved in. Without this a relay's root query, resumed by a promise a handler's call resolved, would be
 * parented under that stale handler span. A fiber with a span runs with that span active (Effect's own rule), so
 * `pg`, `undici`, `ioredis` instrumentations called from it make children of it.
 */
const bridgedTracer: Layer.Layer<never, never, OtelResource.Resource> = Layer.unwrapEffect(
  Effect.map(OtelTracer.make, (inner) =>
    Layer.setTracer(Tracer.make({
      span: inner.span,
      context: (execution, fiber) =>
        fiber.currentSpan === undefined
          ? OtelApi.context.with(OtelApi.ROOT_CONTEXT, execution)
          : inner.context(execution, fiber)
    })))
).pipe(Layer.provide(OtelTracer.layerGlobalTracer))

type Env = Readonly<Record<string, string | undefined>>

const list = (value: string | undefined): ReadonlyArray<string> =>
  (value ?? "").split(",").map((s) => s.trim().toLowerCase()).filter((s) => s !== "")

// The trace exporters @opentelemetry/sdk-node builds from OTEL_TRACES_EXPORTER by itself.
const knownTraceExporters: ReadonlySet<string> = new Set(["otlp", "zipkin", "console", "none"])

const isTrue = (value: string | undefined) => value !== undefined && value.trim().toLowerCase() === "true"

/** True when at least one non-empty `OTEL_*` variable is set and `OTEL_SDK_DISABLED` is not `true`. */
export const isConfigured = (env: Env): boolean =>
  !isTrue(env.OTEL_SDK_DISABLED) &&
  Object.entries(env).some(([name, value]) => name.startsWith("OTEL_") && value !== undefined && value !== "")

/**
 * The metric exporters `OTEL_METRICS_EXPORTER` asks for. Unset, metrics follow traces to the OTLP endpoint
 * when one is configured; the Node SDK alone would drop them, which surprises anyone who set only the endpoint.
 */
const metricExportersFromEnv = (env: Env): Array<SdkMetrics.PushMetricExporter> => {
  const requested = env.OTEL_METRICS_EXPORTER === undefined
    ? (env.OTEL_EXPORTER_OTLP_ENDPOINT || env.OTEL_EXPORTER_OTLP_METRICS_ENDPOINT ? ["otlp"] : [])
    : list(env.OTEL_METRICS_EXPORTER)
  if (requested.includes("none")) return []
  const exporters: Array<SdkMetrics.PushMetricExporter> = []
  for (const name of requested) {
    if (name === "console") exporters.push(new SdkMetrics.ConsoleMetricExporter())
    if (name !== "otlp") continue
    const protocol = (env.OTEL_EXPORTER_OTLP_METRICS_PROTOCOL ?? env.OTEL_EXPORTER_OTLP_PROTOCOL ?? "").trim()
    // gRPC is not carried (its exporter and the grpc-js stack are heavy): see `grpcMetrics`.
    if (protocol === "grpc") continue
    exporters.push(protocol === "http/json" ? new JsonMetricExporter() : new ProtoMetricExporter())
  }
  return exporters
}

/** True when metrics were asked for over OTLP/gRPC, which this layer does not export. */
const grpcMetrics = (env: Env): boolean =>
  (env.OTEL_EXPORTER_OTLP_METRICS_PROTOCOL ?? env.OTEL_EXPORTER_OTLP_PROTOCOL ?? "").trim() === "grpc" &&
  !list(env.OTEL_METRICS_EXPORTER).includes("none") &&
  (env.OTEL_METRICS_EXPORTER !== undefined || Boolean(env.OTEL_EXPORTER_OTLP_ENDPOINT || env.OTEL_EXPORTER_OTLP_METRICS_ENDPOINT))

/** The OTLP unit a metric's name promises (Prometheus naming: the unit is the suffix before `_total`). */
export const unitOf = (name: string): string | undefined => {
  const base = name.endsWith("_total") ? name.slice(0, -"_total".length) : name
  if (base.endsWith("_seconds")) return "s"
  if (base.endsWith("_ms")) return "ms"
  if (base.endsWith("_bytes")) return "By"
  return undefined
}

type MetricData = SdkMetrics.MetricData

/**
 * What the Effect producer hands the reader, corrected for backends: a `*_total` sum is monotonic (a counter,
 * so `rate()` works), a metric named for a unit carries it, and Effect's runtime metrics are dropped unless
 * `runtimeMetrics`.
 */
export const correctMetric = (metric: MetricData): MetricData => {
  const unit = unitOf(metric.descriptor.name)
  const descriptor = unit === undefined ? metric.descriptor : { ...metric.descriptor, unit }
  if (metric.dataPointType === SdkMetrics.DataPointType.SUM && metric.descriptor.name.endsWith("_total")) {
    return { ...metric, descriptor, isMonotonic: true }
  }
  return descriptor === metric.descriptor ? metric : { ...metric, descriptor }
}

const correctingProducer = (producer: SdkMetrics.MetricProducer, runtimeMetrics: boolean): SdkMetrics.MetricProducer => ({
  collect: (collectOptions) =>
    producer.collect(collectOptions).then((result) => ({
      ...result,
      resourceMetrics: {
        ...result.resourceMetrics,
        scopeMetrics: result.resourceMetrics.scopeMetrics.map((scope) => ({
          ...scope,
          metrics: scope.metrics
            .filter((metric) => runtimeMetrics || !metric.descriptor.name.startsWith("effect_"))
            .map(correctMetric)
        }))
      }
    }))
})

const metricIntervalFromEnv = (env: Env): Duration.Duration => {
  const millis = Number.parseInt(env.OTEL_METRIC_EXPORT_INTERVAL ?? "", 10)
  return Duration.millis(Number.isFinite(millis) && millis > 0 ? millis : 60_000)
}

/** Unregisters what `NodeSDK.start` registered, so a later layer (the next test, a restart) can register again. */
const unregisterGlobals = () => {
  OtelApi.trace.disable()
  OtelApi.metrics.disable()
  OtelApi.propagation.disable()
  OtelApi.context.disable()
}

/**
 * Starts the Node SDK with `options` (and the environment for whatever they leave out), installs Effect's
 * OpenTelemetry tracer and exports Effect's metrics through the SDK's metric readers.
 */
export const layer = (options: Options = {}): Layer.Layer<never> =>
  Layer.unwrapScoped(Effect.gen(function*() {
    const env: Env = process.env
    const envServiceName = env.OTEL_SERVICE_NAME !== undefined && env.OTEL_SERVICE_NAME !== ""
    const serviceName = envServiceName ? env.OTEL_SERVICE_NAME! : options.serviceName ?? "unknown_service:node"
    const resourceLayer = OtelResource.layerFromEnv({
      [ATTR_SERVICE_NAME]: serviceName,
      ...(options.serviceVersion === undefined ? {} : { "service.version": options.serviceVersion })
    })
    const resource = yield* Effect.provide(OtelResource.Resource, resourceLayer)
    const producer = correctingProducer(
      (yield* Effect.provideService(OtelMetrics.makeProducer, OtelResource.Resource, resource)) as SdkMetrics.MetricProducer,
      options.runtimeMetrics === true
    )
    const interval = Duration.toMillis(
      options.metricExportInterval === undefined
        ? metricIntervalFromEnv(env)
        : Duration.decode(options.metricExportInterval)
    )
    const readers = (options.metricExporters ?? metricExportersFromEnv(env)).map((exporter) =>
      new SdkMetrics.PeriodicExportingMetricReader({
        exporter,
        exportIntervalMillis: interval,
        exportTimeoutMillis: Math.min(interval, 30_000),
        // Effect's metrics live in Effect's registry; the producer hands them to the reader on every collection.
        metricProducers: [producer]
      })
    )
    const requestedTraces = list(env.OTEL_TRACES_EXPORTER)
    const unknownTraces = requestedTraces.filter((name) => !knownTraceExporters.has(name))
    // An exporter name the SDK does not know leaves it without a span processor: its spans would be no-ops
    // with invalid ids and no traceparent would reach the messages, so Effect's own tracer is kept instead.
    const tracesOff = options.spanProcessors === undefined &&
      (requestedTraces.includes("none") ||
        (requestedTraces.length > 0 && requestedTraces.every((name) => !knownTraceExporters.has(name))))
    if (options.spanProcessors === undefined && unknownTraces.length > 0) {
      yield* Effect.logWarning(
        `OTEL_TRACES_EXPORTER names exporters this SDK does not provide (${unknownTraces.join(", ")}); they export nothing`
      )
    }
    if (options.metricExporters === undefined && grpcMetrics(env)) {
      yield* Effect.logWarning(
        "OTEL_EXPORTER_OTLP_PROTOCOL=grpc: Bulwark's metrics are exported over http/protobuf or http/json only; set OTEL_EXPORTER_OTLP_METRICS_PROTOCOL"
      )
    }
    const shutdownTimeout = options.shutdownTimeout ?? "5 seconds"
    const bridge = options.bridgeContext !== false

    yield* Effect.acquireRelease(
      Effect.sync(() => {
        const sdk = new NodeSDK({
          ...(options.spanProcessors === undefined ? {} : { spanProcessors: [...options.spanProcessors] }),
          ...(readers.length === 0 ? {} : { metricReaders: readers }),
          ...(envServiceName ? {} : { serviceName }),
          // Bulwark's packages instrument themselves; auto-instrumentation is the application's choice.
          instrumentations: [...(options.instrumentations ?? [])],
          // With the bridge, the SDK's AsyncLocalStorage context manager (made safe by `bridgedTracer`);
          // without it none: `null` is the SDK's documented "do not register", which its typings omit.
          ...(bridge ? {} : { contextManager: null as unknown as OtelApi.ContextManager })
        })
        sdk.start()
        return sdk
      }),
      (sdk) =>
        Effect.tryPromise(() => sdk.shutdown()).pipe(
          Effect.timeout(shutdownTimeout),
          Effect.catchAll((error) => Effect.logWarning("OpenTelemetry SDK did not shut down cleanly", error)),
          Effect.interruptible,
          Effect.ensuring(Effect.sync(unregisterGlobals))
        )
    )

    // Without span export the global provider is a no-op; Effect's own tracer keeps valid ids for propagation.
    return tracesOff
      ? Layer.empty
      : Layer.provide(bridge ? bridgedTracer : OtelTracer.layerGlobal, Layer.succeed(OtelResource.Resource, resource))
  }))

/**
 * The application layer: the Node SDK configured by the standard `OTEL_*` environment variables, or nothing at
 * all (no SDK, no network, no log line) when none is set or `OTEL_SDK_DISABLED=true`.
 */
export const layerConfig = (
  options?: { readonly serviceName?: string; readonly instrumentations?: Instrumentations }
): Layer.Layer<never> =>
  Layer.unwrapEffect(Effect.sync(() =>
    isConfigured(process.env)
      ? layer({
        ...(options?.serviceName === undefined ? {} : { serviceName: options.serviceName }),
        ...(options?.instrumentations === undefined ? {} : { instrumentations: options.instrumentations })
      })
      : Layer.empty
  ))
