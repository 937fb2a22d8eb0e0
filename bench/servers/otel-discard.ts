/**
 * A real OpenTelemetry SDK MeterProvider whose periodic reader exports to nowhere: the SDK's
 * collection work is what the telemetry rows measure. Its own module, so that only a server that
 * uses the SDK loads it (bench/server.ts).
 */
import { AggregationTemporality, MeterProvider, PeriodicExportingMetricReader, type PushMetricExporter } from '@opentelemetry/sdk-metrics'

/** An exporter that accepts every batch and keeps nothing. */
export const discardExporter: PushMetricExporter = {
  export: (_metrics, done) => done({ code: 0 }),
  forceFlush: async () => {},
  shutdown: async () => {},
  selectAggregationTemporality: () => AggregationTemporality.CUMULATIVE
}

/** A MeterProvider with one periodic reader (every `intervalMs`) into `discardExporter`. */
export function discardingMeterProvider (intervalMs: number): MeterProvider {
  return new MeterProvider({ readers: [new PeriodicExportingMetricReader({ exporter: discardExporter, exportIntervalMillis: intervalMs })] })
}
