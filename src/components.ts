/** The built-in components, registered by name: the one place that lists them all. */
import { registry } from './core/registry.ts';
import { fileSource } from './sources/file/index.ts';
import { httpSource } from './sources/http/index.ts';
import { natsSource } from './sources/nats/index.ts';
import { validateTransform } from './transforms/validate/index.ts';
import { transformTransform } from './transforms/transform/index.ts';
import { lookupTransform } from './transforms/lookup/index.ts';
import { dedupeTransform } from './transforms/dedupe/index.ts';
import { windowTransform } from './transforms/window/index.ts';
import { routeTransform } from './transforms/route/index.ts';
import { filterTransform } from './transforms/filter/index.ts';
import { fileSink } from './sinks/file/index.ts';
import { natsSink } from './sinks/nats/index.ts';
import { postgresSink } from './sinks/postgres/index.ts';
import { sqliteSink } from './sinks/sqlite/index.ts';
import { stdoutSink } from './sinks/stdout/index.ts';

registry.source(fileSource);
registry.source(httpSource);
registry.source(natsSource);

registry.transform(validateTransform);
registry.transform(transformTransform);
registry.transform(lookupTransform);
registry.transform(dedupeTransform);
registry.transform(windowTransform);
registry.transform(routeTransform);
registry.transform(filterTransform);

registry.sink(fileSink);
registry.sink(natsSink);
registry.sink(postgresSink);
registry.sink(sqliteSink);
registry.sink(stdoutSink);
