/**
 * Connecting to NATS and making sure a JetStream stream exists, with errors that say what to do:
 * the same for the `nats` source and sink and for the cluster runtime's log.
 */
import { connect, type NatsConnection } from '@nats-io/transport-node';
import {
  DiscardPolicy,
  JetStreamApiCodes,
  JetStreamApiError,
  jetstreamManager,
  type JetStreamManager,
  type StreamInfo,
} from '@nats-io/jetstream';
import { SluiceError } from '../errors.ts';
import { redact } from './url.ts';

/**
 * Connects (failing within `timeoutMs` when nobody answers) and checks that the server has
 * JetStream. Once connected, the client reconnects by itself for as long as the connection lives.
 */
export async function connectJetStream(
  url: string,
  name: string,
  timeoutMs = 3000,
): Promise<{ nc: NatsConnection; jsm: JetStreamManager }> {
  let nc: NatsConnection;
  try {
    nc = await connect({
      servers: url,
      name,
      timeout: timeoutMs,
      maxReconnectAttempts: -1,
      reconnectTimeWait: 250,
    });
  } catch (err) {
    throw new SluiceError(
      'SLUICE_ERR_CONNECT',
      `cannot connect to NATS at ${redact(url)}: ${(err as Error).message}`,
      {
        cause: err,
      },
    );
  }
  try {
    return { nc, jsm: await jetstreamManager(nc, { timeout: timeoutMs }) };
  } catch (err) {
    await nc.close().catch(() => {});
    const noJs = (err as Error).constructor.name === 'JetStreamNotEnabled';
    throw new SluiceError(
      'SLUICE_ERR_CONNECT',
      noJs
        ? `NATS at ${redact(url)} has no JetStream`
        : `NATS at ${redact(url)} did not answer JetStream's API: ${(err as Error).message}`,
      {
        cause: err,
        hint: noJs
          ? 'Start nats-server with JetStream enabled (-js, or "jetstream {}" in its config) and a store directory (-sd).'
          : undefined,
      },
    );
  }
}

/** Whether a JetStream API call failed because the stream or consumer it named does not exist. */
export const streamMissing = (err: unknown): boolean =>
  err instanceof JetStreamApiError && err.code === JetStreamApiCodes.StreamNotFound;
export const consumerMissing = (err: unknown): boolean =>
  err instanceof JetStreamApiError && err.code === JetStreamApiCodes.ConsumerNotFound;

export interface StreamSpec {
  name: string;
  subjects: string[];
  /** Messages older than this are discarded (ms; 0 keeps them until a limit or a purge). */
  maxAgeMs?: number;
  /** The broker drops a message whose Nats-Msg-Id it saw within this window (ms). */
  duplicateWindowMs?: number;
  /** Largest size; when full, new messages are refused (never old ones dropped). */
  maxBytes?: number;
}

const nanos = (ms: number): number => ms * 1_000_000;

/**
 * Creates the stream, or checks an existing one: subjects it lacks are added; any other difference
 * is left as the operator set it.
 */
export async function ensureStream(jsm: JetStreamManager, spec: StreamSpec): Promise<StreamInfo> {
  let info: StreamInfo | undefined;
  try {
    info = await jsm.streams.info(spec.name);
  } catch (err) {
    if (!streamMissing(err)) throw connectError(spec, err);
  }
  try {
    if (!info)
      return await jsm.streams.add({
        name: spec.name,
        subjects: spec.subjects,
        ...(spec.maxAgeMs ? { max_age: nanos(spec.maxAgeMs) } : {}),
        ...(spec.duplicateWindowMs ? { duplicate_window: nanos(spec.duplicateWindowMs) } : {}),
        ...(spec.maxBytes ? { max_bytes: spec.maxBytes, discard: DiscardPolicy.New } : {}),
      });
    const missing = spec.subjects.filter((s) => !info.config.subjects?.includes(s));
    if (missing.length === 0) return info;
    return await jsm.streams.update(spec.name, { subjects: [...(info.config.subjects ?? []), ...missing] });
  } catch (err) {
    throw connectError(spec, err);
  }
}

function connectError(spec: StreamSpec, err: unknown): SluiceError {
  return new SluiceError(
    'SLUICE_ERR_CONNECT',
    `JetStream stream ${spec.name} (subjects ${spec.subjects.join(', ')}) could not be created or checked: ${(err as Error).message}`,
    {
      cause: err,
      hint: 'Another stream may already take these subjects, or the account may lack JetStream resources; `nats stream ls` shows the streams.',
    },
  );
}

/**
 * Drops a subject's messages before stream sequence `seq` (those up to `seq - 1`), and never more.
 * JetStream's purge takes a `seq` of 1 (or 0) as "no sequence" and drops *every* message of the
 * subject: a cluster owner that checkpointed before processing anything (position 0) and purged
 * with `seq: 1` deleted acknowledged requests it had not read yet (2026-12-07: the first requests
 * of a pipeline handed over before its first message; 730 requests after a pipeline stood
 * unowned for 38 s). Returns how many messages were dropped.
 */
export async function purgeBefore(
  jsm: JetStreamManager,
  stream: string,
  subject: string,
  seq: number,
): Promise<number> {
  if (seq <= 1) return 0;
  const r = await jsm.streams.purge(stream, { filter: subject, seq });
  return r.purged;
}
