/**
 * `nats`: every record as one JetStream message on a subject. Each carries the record's id as
 * `Nats-Msg-Id`, so the broker drops a message it already stored within the stream's duplicate
 * window: a delivery repeated after a crash does not publish twice. Publishes are pipelined, and
 * `commit` returns once JetStream has acknowledged (stored) every one of them.
 *
 * What cannot be done: a published message cannot be taken back, so an aborted run may leave some
 * of its records on the stream (at least once; with the ids, a rerun within the duplicate window adds
 * nothing).
 */
import type { JetStreamClient, PubAck } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import { stringify } from '../../core/encode.ts';
import type { Rec, SinkSpec, SinkWriter } from '../../core/types.ts';
import { SluiceError } from '../../errors.ts';
import { DEFAULT_NATS_URL, redact } from '../../helpers/url.ts';

export interface NatsSinkConfig {
  type: 'nats';
  url?: string;
  subject: string;
  /** Create the stream if it does not exist (with `subject`); otherwise one must already take it. */
  stream?: string;
  /** The record field whose value becomes Nats-Msg-Id; `null` sends none. */
  id_field?: string | null;
}

/** Publishes awaiting their acknowledgement at most; then they are awaited (bounded memory). */
const IN_FLIGHT = 1024;

/**
 * One record a line, as `<id as JSON>\t<record as JSON>`: JSON text never holds a raw tab, so the
 * writer finds the id without parsing the record again.
 */
function encoderFor(config: NatsSinkConfig): (records: Rec[]) => string {
  const field = config.id_field === undefined ? 'id' : config.id_field;
  return (records) => {
    let out = '';
    for (const r of records) {
      const id = field === null ? null : r[field];
      out += `${id === undefined || id === null ? 'null' : JSON.stringify(String(id))}\t${stringify(r)}\n`;
    }
    return out;
  };
}

class NatsWriter implements SinkWriter {
  readonly #pending = new Set<Promise<PubAck>>();
  #failure: Error | undefined;
  readonly #encoder = new TextEncoder();

  constructor(
    private readonly nc: NatsConnection,
    private readonly js: JetStreamClient,
    private readonly config: NatsSinkConfig,
  ) {}

  async write(encoded: string): Promise<void> {
    let from = 0;
    for (let nl = encoded.indexOf('\n'); nl >= 0; nl = encoded.indexOf('\n', from)) {
      const tab = encoded.indexOf('\t', from);
      const idJson = encoded.slice(from, tab);
      const body = encoded.slice(tab + 1, nl);
      from = nl + 1;
      // A full window is drained whole: racing a thousand promises per record would cost more
      // than the publish.
      if (this.#pending.size >= IN_FLIGHT) await Promise.allSettled([...this.#pending]);
      this.#throwIfFailed();
      const msgID = idJson === 'null' ? undefined : (JSON.parse(idJson) as string);
      const ack = this.js.publish(this.config.subject, this.#encoder.encode(body), msgID ? { msgID } : {});
      this.#pending.add(ack);
      ack.then(
        () => this.#pending.delete(ack),
        (err: Error) => {
          this.#pending.delete(ack);
          this.#failure ??= err;
        },
      );
    }
  }

  async commit(): Promise<void> {
    await Promise.allSettled([...this.#pending]);
    try {
      this.#throwIfFailed();
    } finally {
      await this.nc.close();
    }
  }

  async abort(): Promise<void> {
    await Promise.allSettled([...this.#pending]);
    await this.nc.close();
  }

  #throwIfFailed(): void {
    if (this.#failure)
      throw new SluiceError(
        'SLUICE_ERR_SINK_WRITE',
        `publishing to ${this.config.subject} failed: ${this.#failure.message}`,
        { cause: this.#failure },
      );
  }
}

export const natsSink: SinkSpec<NatsSinkConfig> = {
  type: 'nats',
  description:
    'Publishes each record as a JetStream message, with its id as Nats-Msg-Id so the broker drops repeats within its duplicate window.',
  schema: {
    type: 'object',
    required: ['subject'],
    properties: {
      url: { type: 'string', description: `NATS server URL (default ${DEFAULT_NATS_URL}).` },
      subject: { type: 'string', minLength: 1, description: 'Subject every record is published on.' },
      stream: {
        type: 'string',
        pattern: '^[A-Za-z0-9_-]+$',
        description: 'JetStream stream to create for the subject if it does not exist.',
      },
      id_field: {
        type: ['string', 'null'],
        description: 'Record field sent as Nats-Msg-Id (default id); null sends none.',
      },
    },
  },
  encoder: encoderFor,
  async open(config) {
    const url = config.url ?? DEFAULT_NATS_URL;
    // The NATS client is loaded by the first run that publishes, not by every process and worker
    // thread that registers this sink.
    const [{ connectJetStream, ensureStream }, { jetstream }] = await Promise.all([
      import('../../helpers/jetstream.ts'),
      import('@nats-io/jetstream'),
    ]);
    const { nc, jsm } = await connectJetStream(url, 'sluice nats sink');
    try {
      if (config.stream) await ensureStream(jsm, { name: config.stream, subjects: [config.subject] });
      else if (!(await jsm.streams.find(config.subject).catch(() => undefined)))
        throw new SluiceError(
          'SLUICE_ERR_CONNECT',
          `no JetStream stream takes subject ${config.subject} at ${redact(url)}`,
          {
            hint: 'Create one (nats stream add), or give the sink a `stream` name to create.',
          },
        );
    } catch (err) {
      await nc.close();
      throw err;
    }
    return new NatsWriter(nc, jetstream(nc), config);
  },
  describe: (config) => `NATS subject ${config.subject} at ${redact(config.url ?? DEFAULT_NATS_URL)}`,
};
