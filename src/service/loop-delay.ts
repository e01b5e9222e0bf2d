/**
 * How far behind this thread's event loop is: the queueing delay of the thread that answers HTTP.
 *
 * At 3x capacity the lanes' queueing delay (lanes.ts) was not enough: the HTTP thread itself was
 * the queue. Connections, headers and bodies waited for it, so refusals took up to 714 ms (p99
 * 106 ms) and a light tenant's p99 went from 7.3 to 112 ms (bench:overload, 2026-12-06). Its delay
 * is measured as a timer's lateness, the signal Node's monitorEventLoopDelay samples.
 *
 * What counts is a standing delay, not a stall: as in CoDel, the least lateness over the last
 * WINDOW_MS. One slow turn (a garbage collection, the machine's other work: 39 ms was seen in the
 * test suite) leaves on-time ticks in the window and sheds nothing; a loop that is late at every
 * tick, or has not reached its timer for a whole window, is behind. Measured since: at 3x capacity
 * the standing delay stays under 25 ms (event-loop delay p99 18-22 ms) once the lanes shed by the
 * wait a request would have, so this guards stalls and bursts more than it sheds at steady state.
 */

/** The timer's period: lateness finer than this is not seen, a period costs ~1 µs. */
const TICK_MS = 10;

/** The span over which the least lateness is taken (CoDel's interval is 100 ms). */
const WINDOW_MS = 100;

/** Ticks kept: enough for a window of ticks on time. */
const KEPT = Math.ceil(WINDOW_MS / TICK_MS) + 1;

let timer: NodeJS.Timeout | undefined;
let last = 0;
/** When each of the last KEPT ticks ran and how late it was, in a ring. */
const at = new Float64Array(KEPT);
const late = new Float64Array(KEPT);
let next = 0;

function tick(): void {
  const now = performance.now();
  at[next] = now;
  late[next] = Math.max(0, now - last - TICK_MS);
  next = (next + 1) % KEPT;
  last = now;
}

/** Starts measuring this thread's event loop (once; the timer keeps no process alive). */
export function watchLoopDelay(): void {
  if (timer !== undefined) return;
  last = performance.now();
  at.fill(-Infinity);
  timer = setInterval(tick, TICK_MS).unref();
}

/**
 * The event loop's standing delay in ms: the least lateness of the ticks of the last WINDOW_MS, or,
 * when no tick ran in it, how overdue the next one is; 0 before `watchLoopDelay`.
 */
export function loopDelayMs(): number {
  if (timer === undefined) return 0;
  const now = performance.now();
  let least = Infinity;
  for (let i = 0; i < KEPT; i++) if (now - at[i]! <= WINDOW_MS && late[i]! < least) least = late[i]!;
  return least === Infinity ? Math.max(0, now - last - TICK_MS) : least;
}
