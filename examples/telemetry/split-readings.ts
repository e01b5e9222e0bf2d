/**
 * Fans a validated device report out into one record per reading, each carrying the device, its
 * site and the report's time. `region` is left null here and filled by the pipeline's lookup.
 */
import { defineTransform, reject, rfc3339ToEpochMs } from 'sluice';

export interface Reading {
  sensor: string;
  value: number;
  seq: number;
}

export interface DeviceReport {
  device: string;
  site: string;
  ts: string;
  fw?: string;
  readings: Reading[];
}

export interface SensorReading {
  device: string;
  site: string;
  region: string | null;
  ts_ms: number;
  sensor: string;
  value: number;
  seq: number;
}

export default defineTransform<DeviceReport, SensorReading>((report) => {
  const tsMs = rfc3339ToEpochMs(report.ts);
  if (Number.isNaN(tsMs))
    return reject('invalid', `ts ${JSON.stringify(report.ts)} is not a real date and time`, '/ts');
  const out: SensorReading[] = [];
  for (const r of report.readings) {
    out.push({
      device: report.device,
      site: report.site,
      region: null,
      ts_ms: tsMs,
      sensor: r.sensor,
      value: r.value,
      seq: r.seq,
    });
  }
  return out;
});
