/**
 * `nats`: reads a JetStream stream through a durable pull consumer, for `sluice run` as a job over a
 * broker's backlog: the run takes every message waiting for the consumer (until none arrives for
 * `idle`), and acknowledges them only after every sink has committed, so a run that fails or is
 * killed leaves them for the next one. Each message holds one record, or several as NDJSON.
 *
 * The consumer acknowledges cumulatively (`ack_policy: all`): one acknowledgement of the last
 * message covers the run. A consumer belongs to one run at a time; a run that finds messages still
 * awaiting acknowledgement (a previous run was killed) recreates the consumer at its acknowledged
 * position, so they come again at once rather than after `ack_wait`.
 */
import type { JsMsg } from '@nats-io/jetstream';
import type { Chunk, SourceReader, SourceSpec } from '../../core/types.ts';
import { SluiceError } from '../../errors.ts';
import { DEFAULT_NATS_URL, redact } from '../../helpers/url.ts';
import { DEFAULT_MAX_RECORD, decoderFor } from '../file/decoder.ts';

export interface NatsSourceConfig {
  type: 'nats';
  url?: string;
  stream: string;
  /** Durable consumer name (created if missing). */
  consumer?: string;
  /** Only messages on this subject (wildcards allowed), when the consumer is created. */
  subject?: string;
  /** Messages per fetch. */
  batch?: number;
  /** The backlog is done when no message arrives for this long (ms). */
  idle_ms?: number;
  max_record_bytes?: number;
}

const NL = 10;
const HOUR_NS = 3_600_000_000_000;

class NatsReader implements SourceReader {
  bytesRead = 0;
  readonly totalBytes = undefined;
  #last: JsMsg | undefined;

  constructor(
    private readonly close_: () => Promise<void>,
    private readonly fetchBatch: () => Promise<AsyncIterable<JsMsg>>,
  ) {}

  async *chunks(): AsyncIterable<Chunk> {
    for (;;) {
      const parts: Uint8Array[] = [];
      for await (const m of await this.fetchBatch()) {
        parts.push(m.data);
        if (m.data.length > 0 && m.data[m.data.length - 1] !== NL) parts.push(Buffer.of(NL));
        this.#last = m;
      }
      if (parts.length === 0) return;
      const bytes = Buffer.concat(parts);
      this.bytesRead += bytes.length;
      yield { bytes };
    }
  }

  async acknowledge(): Promise<void> {
    // Cumulative: acknowledges every message up to the last one this run read.
    await this.#last?.ackAck();
  }

  close(): Promise<void> {
    return this.close_();
  }
}

export const natsSource: SourceSpec<NatsSourceConfig> = {
  type: 'nats',
  description:
    'The messages waiting in a JetStream stream for a durable consumer; acknowledged only after every sink has committed.',
  schema: {
    type: 'object',
    required: ['stream'],
    properties: {
      url: { type: 'string', description: `NATS server URL (default ${DEFAULT_NATS_URL}).` },
      stream: { type: 'string', pattern: '^[A-Za-z0-9_-]+$', description: 'JetStream stream to read.' },
      consumer: {
        type: 'string',
        pattern: '^[A-Za-z0-9_-]+$',
        default: 'sluice',
        description: 'Durable consumer name; created if missing.',
      },
      subject: {
        type: 'string',
        description: 'Only messages on this subject (when the consumer is created).',
      },
      batch: {
        type: 'integer',
        minimum: 1,
        maximum: 100000,
        default: 1000,
        description: 'Messages per fetch.',
      },
      idle_ms: {
        type: 'integer',
        // JetStream's client refuses a pull that expires sooner.
        minimum: 1000,
        default: 1000,
        description: 'The run ends when no message arrives for this long.',
      },
      max_record_bytes: {
        type: 'integer',
        minimum: 1024,
        default: DEFAULT_MAX_RECORD,
        description: 'A longer record becomes a too_large dead letter.',
      },
    },
  },
  readsInput: false,
  async open(config) {
    const url = config.url ?? DEFAULT_NATS_URL;
    const durable = config.consumer ?? 'sluice';
    // The NATS client is loaded by the first run that reads a stream, not by every process and
    // worker thread that registers this source.
    const [{ connectJetStream, consumerMissing, streamMissing }, { AckPolicy, DeliverPolicy, jetstream }] =
      await Promise.all([import('../../helpers/jetstream.ts'), import('@nats-io/jetstream')]);
    const { nc, jsm } = await connectJetStream(url, 'sluice nats source');
    try {
      await jsm.streams.info(config.stream).catch((err: Error) => {
        throw new SluiceError(
          'SLUICE_ERR_CONNECT',
          streamMissing(err)
            ? `no JetStream stream ${config.stream} at ${redact(url)}`
            : `JetStream stream ${config.stream} at ${redact(url)} could not be read: ${err.message}`,
          { cause: err, hint: 'Create the stream (nats stream add) or correct source.stream.' },
        );
      });
      const existing = await jsm.consumers.info(config.stream, durable).catch((err: unknown) => {
        if (consumerMissing(err)) return undefined;
        throw err;
      });
      if (existing && existing.config.ack_policy !== AckPolicy.All)
        throw new SluiceError(
          'SLUICE_ERR_CONFIG_INVALID',
          `consumer ${durable} of stream ${config.stream} acknowledges with policy "${existing.config.ack_policy}"; sluice needs "all"`,
          { hint: 'Give source.consumer a new name: sluice creates it.' },
        );
      let startSeq: number | undefined;
      if (existing && existing.num_ack_pending > 0) {
        // A previous run read messages and died before acknowledging them: start over from what
        // was acknowledged, now, instead of waiting ack_wait for their redelivery.
        startSeq = existing.ack_floor.stream_seq + 1;
        await jsm.consumers.delete(config.stream, durable);
      }
      if (!existing || startSeq !== undefined)
        await jsm.consumers.add(config.stream, {
          durable_name: durable,
          ack_policy: AckPolicy.All,
          // Acknowledged at the end of the run: nothing is redelivered during it, however long.
          ack_wait: HOUR_NS,
          max_ack_pending: -1,
          ...((config.subject ?? existing?.config.filter_subject)
            ? { filter_subject: config.subject ?? existing?.config.filter_subject }
            : {}),
          ...(startSeq !== undefined
            ? { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: startSeq }
            : { deliver_policy: DeliverPolicy.All }),
        });
      const consumer = await jetstream(nc).consumers.get(config.stream, durable);
      const batch = config.batch ?? 1000;
      const idle = config.idle_ms ?? 1000;
      return new NatsReader(
        () => nc.close(),
        () => consumer.fetch({ max_messages: batch, expires: idle }),
      );
    } catch (err) {
      await nc.close();
      throw err;
    }
  },
  decoder: (config) => decoderFor('ndjson', config.max_record_bytes ?? DEFAULT_MAX_RECORD),
};
