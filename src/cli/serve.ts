/**
 * `sluice serve [config]`: runs the service until SIGTERM or SIGINT (graceful: in-flight requests
 * finish, state is checkpointed, exit 0). SIGHUP reloads the config; a config that does not load
 * is refused with a logged error and the running one stays.
 */
import '../components.ts';
import { resolve } from 'node:path';
import { pino } from 'pino';
import { embeddedConfig, loadServiceConfig, type ServiceConfig } from '../service/config.ts';
import { ClusterService } from '../cluster/service.ts';
import { Service } from '../service/service.ts';

export interface ServeFlags {
  host?: string;
  port?: number;
  data: string;
  logLevel: string;
}

export async function serveCommand(file: string | undefined, flags: ServeFlags): Promise<number> {
  const log = pino({
    level: flags.logLevel,
    base: { service: 'sluice' },
    // Keys never reach the log, whatever logs a request.
    redact: ['req.headers.authorization', 'headers.authorization', '*.authorization'],
  });
  const load = (): ServiceConfig => {
    const config = file ? loadServiceConfig(file) : embeddedConfig(resolve(flags.data));
    if (flags.host !== undefined) config.listen.host = flags.host;
    if (flags.port !== undefined) config.listen.port = flags.port;
    return config;
  };
  const config = load();
  const service =
    config.runtime.type === 'cluster'
      ? await ClusterService.start(config, log)
      : await Service.start(config, log);
  const pipelines = config.tenants.flatMap((t) => [...t.pipelines.keys()].map((p) => `${t.id}/${p}`));
  log.info(
    {
      url: service.url,
      runtime: config.runtime.type,
      ...(config.runtime.type === 'embedded' ? { store: config.store.path } : {}),
      pipelines,
    },
    'listening',
  );
  if (config.demoKey) {
    const first = config.tenants[0]!;
    const pipeline = [...first.pipelines.keys()][0]!;
    process.stderr.write(
      [
        '',
        `sluice is listening on ${service.url} (demo tenant "${first.id}", store ${config.store.path})`,
        '',
        'Send an event:',
        `  curl -s -X POST ${service.url}/v1/pipelines/${pipeline}/events \\`,
        `    -H 'Authorization: Bearer ${config.demoKey}' -H 'Content-Type: application/json' \\`,
        `    -d '{"id":"evt_01HZX3K4M5N6P7Q8R9S0T1V2W3","type":"payment.captured","ts":"2026-11-21T10:00:00Z","user":{"id":"usr_000042","country":"de"},"amount":"12.50","currency":"EUR"}'`,
        '',
        `Then: curl -s -H 'Authorization: Bearer ${config.demoKey}' ${service.url}/v1/pipelines/${pipeline}/windows`,
        `API: ${service.url}/openapi.json · metrics: ${service.url}/metrics · Ctrl-C stops (state is kept in ${config.store.path})`,
        '',
      ].join('\n'),
    );
  }

  return new Promise<number>((done) => {
    let stopping = false;
    const stop = (signal: string): void => {
      if (stopping) return;
      stopping = true;
      log.info({ signal }, 'shutting down');
      // Whatever still holds the process (a client trickling a body, a stuck sink), it exits:
      // everything acknowledged is already durable, and the log covers what was not checkpointed.
      const timer = setTimeout(() => {
        log.fatal({ ms: config.shutdownTimeoutMs }, 'graceful shutdown took too long; exiting');
        process.exit(1);
      }, config.shutdownTimeoutMs).unref();
      service
        .shutdown()
        .then(() => {
          clearTimeout(timer);
          const code = process.exitCode === undefined ? 0 : Number(process.exitCode);
          done(code);
          // Nothing is left to do; do not wait for idle keep-alive sockets or timers.
          setImmediate(() => process.exit(code));
        })
        .catch((err: unknown) => {
          log.fatal({ err }, 'shutdown failed');
          process.exit(1);
        });
    };
    process.on('SIGTERM', () => stop('SIGTERM'));
    process.on('SIGINT', () => stop('SIGINT'));
    process.on('SIGHUP', () => {
      log.info('SIGHUP: reloading the config');
      void service.reload(load);
    });
  });
}
