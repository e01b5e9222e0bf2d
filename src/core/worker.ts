/** Worker thread entry: one {@link Processor} per thread, driven by the engine's messages. */
import { parentPort } from 'node:worker_threads';
import '../components.ts';
import { Processor } from './processor.ts';
import type { ToProcessor } from './protocol.ts';

const port = parentPort!;
const processor = new Processor((message, transfer) => port.postMessage(message, transfer ?? []));
let queue = Promise.resolve();
// Messages are handled strictly one after another: a verdict must never overtake its chunk.
port.on('message', (msg: ToProcessor) => {
  queue = queue.then(() => processor.handle(msg));
});
