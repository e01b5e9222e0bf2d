/**
 * `sluice tap <pipeline>`: records leaving a step of a running `sluice serve`, live, like
 * `vector tap`. Reads GET /v1/pipelines/<pipeline>/tap with the tenant's API key and writes each
 * record as one JSON line on stdout (a line saying what is tapped goes to stderr), until --limit
 * records or --seconds have passed or Ctrl-C.
 */
import { SluiceError } from '../errors.ts';
import { parseDuration } from '../helpers/time.ts';

export interface TapFlags {
  url: string;
  step?: string;
  limit: number;
  seconds: string;
  key?: string;
}

export async function tapCommand(pipeline: string, flags: TapFlags): Promise<number> {
  const key = flags.key ?? process.env.SLUICE_API_KEY;
  if (!key)
    throw new SluiceError('SLUICE_ERR_USAGE', 'no API key: pass --key, or set SLUICE_API_KEY', {
      hint: 'Use a key of the tenant the pipeline belongs to (`sluice keys new` makes one).',
    });
  const ms = parseDuration(flags.seconds);
  if (!(ms > 0 && ms <= 3_600_000))
    throw new SluiceError('SLUICE_ERR_USAGE', `--seconds ${flags.seconds} is not a duration up to 1h`);
  const url = new URL(`${flags.url.replace(/\/$/, '')}/v1/pipelines/${encodeURIComponent(pipeline)}/tap`);
  if (flags.step) url.searchParams.set('step', flags.step);
  url.searchParams.set('limit', String(flags.limit));
  url.searchParams.set('seconds', String(ms / 1000));
  let res: Response;
  try {
    res = await fetch(url, { headers: { authorization: `Bearer ${key}` } });
  } catch (err) {
    const cause =
      (err as Error).cause instanceof Error
        ? ((err as Error).cause as Error).message
        : (err as Error).message;
    throw new SluiceError('SLUICE_ERR_SERVICE_UNREACHABLE', `cannot reach ${url.origin}: ${cause}`);
  }
  if (!res.ok) {
    // The service answers problem documents: show its code and words.
    const problem = (await res.json().catch(() => ({}))) as { code?: string; detail?: string };
    throw new SluiceError(
      'SLUICE_ERR_TAP_REFUSED',
      `${url.origin} answered ${res.status}${problem.code ? ` ${problem.code}` : ''}: ${problem.detail ?? res.statusText}`,
    );
  }
  let rest = '';
  const decoder = new TextDecoder();
  for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
    rest += decoder.decode(chunk, { stream: true });
    let nl: number;
    while ((nl = rest.indexOf('\n')) >= 0) {
      const line = rest.slice(0, nl);
      rest = rest.slice(nl + 1);
      const m = JSON.parse(line) as {
        tap?: { step: string; limit: number; seconds: number };
        record?: unknown;
      };
      if (m.tap)
        process.stderr.write(
          `tapping ${pipeline} after step ${m.tap.step}: up to ${m.tap.limit} records or ${m.tap.seconds} s\n`,
        );
      else process.stdout.write(JSON.stringify(m.record) + '\n');
    }
  }
  return 0;
}
