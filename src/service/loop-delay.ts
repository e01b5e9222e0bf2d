/**
 * How far behind this thread's event loop is: the queueing delay of the thread that answers HTTP.
 *
 * At 3x capacity the lanes' queueing delay (lanes.ts) was not enough: the HTTP thread itself was
 * the queue. Connections, headers and bodies waited for it, so refusals took up to 714 ms (p99
 * 106 ms) and a light tenant's p99 went from 7.3 to 112 ms (bench:overload, 2026-12-06). Its delay
 * is measured as a timer's lateness, the signal Node's monitorEventLoopDelay samples, but read as
 * the value now rather than a histogram over a period.
 */

/** The timer's period: lateness finer than this is not seen, a period costs ~1 µs. */
const TICK_MS = 10;

let timer: NodeJS.Timeout | undefined;
let last = 0;
let lateness = 0;

function tick(): void {
  const now = performance.now();
  lateness = Math.max(0, now - last - TICK_MS);
  last = now;
}

/** Starts measuring this thread's event loop (once; the timer keeps no process alive). */
export function watchLoopDelay(): void {
  if (timer !== undefined) return;
  last = performance.now();
  timer = setInterval(tick, TICK_MS).unref();
}

/**
 * The event loop's delay in ms: the last tick's lateness, or more when the next tick is already
 * overdue (a long turn still running is a delay now, not only once it ends); 0 before
 * `watchLoopDelay`.
 */
export function loopDelayMs(): number {
  if (timer === undefined) return 0;
  return Math.max(lateness, performance.now() - last - TICK_MS);
}
