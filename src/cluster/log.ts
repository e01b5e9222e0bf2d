/**
 * The cluster's log: one JetStream stream, one subject per pipeline, one message per request. The
 * message is the request body as received (gzip stays gzip); headers say how to read it.
 */
import { headers as natsHeaders, type MsgHdrs } from '@nats-io/transport-node';
import type { BodyFormat } from '../sources/http/index.ts';

/** Tenant and pipeline names may hold '.', a NATS token separator: escaped, reversibly. */
const token = (name: string): string => name.replace(/[_.]/g, (c) => (c === '_' ? '_5f' : '_2e'));

export const subjectOf = (stream: string, tenant: string, pipeline: string): string =>
  `${stream}.${token(tenant)}.${token(pipeline)}`;

export const subjectsOf = (stream: string): string[] => [`${stream}.>`];

/**
 * Core NATS subjects of `sluice tap`, outside the stream's (nothing of a tap is stored): watchers
 * announce the step they watch on `control` every second, and the pipeline's owner publishes the
 * records leaving it on `records(step)`. Step ids go hex-encoded: any text is a valid token then.
 */
export function tapSubjects(
  stream: string,
  tenant: string,
  pipeline: string,
): { control: string; records: (step: string) => string } {
  const base = `_sluice_tap.${token(stream)}.${token(tenant)}.${token(pipeline)}`;
  return {
    control: `${base}.control`,
    records: (step) => `${base}.records.${Buffer.from(step).toString('hex')}`,
  };
}

/** How long an owner keeps copying a step's records after the last announcement of a watcher. */
export const TAP_LEASE_MS = 3000;
/** How often a watcher announces itself. */
export const TAP_ANNOUNCE_MS = 1000;

export const HEADER = {
  requestId: 'Sluice-Request-Id',
  receivedMs: 'Sluice-Received-Ms',
  /** The instance that took the request: its ingest path, for per-path watermarks. */
  instance: 'Sluice-Instance',
  format: 'Sluice-Format',
  gzip: 'Sluice-Gzip',
  /** Dead letters this message replays: deleted when it is processed. */
  replay: 'Sluice-Replay',
  /** Record bounds (base64 of int32 pairs), for bodies cut by sluice itself (replays). */
  bounds: 'Sluice-Bounds',
} as const;

export interface RequestMeta {
  requestId: string | null;
  receivedMs: number;
  /** The instance that took the request; '' for a message published by something else. */
  instance: string;
  format: BodyFormat;
  gzip: boolean;
  replayIds: number[];
  bounds: Int32Array | null;
  /** `Nats-Msg-Id`: `<tenant>/<pipeline>/<Idempotency-Key>` when the request had one. */
  msgId: string | null;
}

export function requestHeaders(
  meta: Omit<RequestMeta, 'replayIds' | 'bounds' | 'msgId'> & { replayIds?: number[]; bounds?: Int32Array },
): MsgHdrs {
  const h = natsHeaders();
  if (meta.requestId !== null) h.set(HEADER.requestId, meta.requestId);
  h.set(HEADER.receivedMs, String(meta.receivedMs));
  h.set(HEADER.instance, meta.instance);
  h.set(HEADER.format, meta.format);
  if (meta.gzip) h.set(HEADER.gzip, '1');
  if (meta.replayIds && meta.replayIds.length > 0) h.set(HEADER.replay, meta.replayIds.join(','));
  if (meta.bounds)
    h.set(
      HEADER.bounds,
      Buffer.from(meta.bounds.buffer, meta.bounds.byteOffset, meta.bounds.byteLength).toString('base64'),
    );
  return h;
}

/** A message's headers; one published by something else reads as NDJSON received when stored. */
export function requestMeta(h: MsgHdrs | undefined, storedMs: number): RequestMeta {
  const received = Number(h?.get(HEADER.receivedMs));
  const replay = h?.get(HEADER.replay) ?? '';
  const bounds = h?.get(HEADER.bounds) ?? '';
  return {
    requestId: h?.get(HEADER.requestId) || null,
    receivedMs: Number.isFinite(received) && received > 0 ? received : storedMs,
    instance: h?.get(HEADER.instance) ?? '',
    format: h?.get(HEADER.format) === 'json' ? 'json' : 'ndjson',
    gzip: h?.get(HEADER.gzip) === '1',
    replayIds: replay === '' ? [] : replay.split(',').map(Number).filter(Number.isSafeInteger),
    bounds: bounds === '' ? null : new Int32Array(new Uint8Array(Buffer.from(bounds, 'base64')).buffer),
    msgId: h?.get('Nats-Msg-Id') || null,
  };
}
