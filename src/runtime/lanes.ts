/**
 * Fair dispatch of tenants' work to the pipeline thread, and the queueing delay that sheds load.
 *
 * The pipeline thread works its calls in arrival order, so whatever is sent to it is a FIFO queue
 * every tenant waits in. Sending every request at once let one tenant's flood delay the others by
 * all of its backlog, and let the backlog grow without bound: at 3x capacity, 202s took up to 60 s
 * (issue 13, finding 3). So ingest and replay calls wait here, in one lane per tenant, and go to the
 * pipeline thread only while the work sent and not yet answered is estimated below
 * DISPATCH_WINDOW_MS; the next call comes from the lane that has been served least (start-time fair
 * queuing by estimated cost). A lane's queueing delay is what admission compares with
 * `limits.queue_delay`: past it, new requests are refused at once instead of waiting. It is the
 * longer of the age of its oldest waiting call (the signal CoDel uses: time spent queued) and the
 * wait a new call would have behind the work queued (`expectedWaitOf`), which sees a backlog before
 * its head has aged.
 */

/**
 * Work sent to the pipeline thread and not yet done there, estimated in ms. Small enough that a call
 * of another tenant waits at most about this long behind it; large enough that the pipeline thread
 * is not idle while calls wait here (the note that a call is done comes back in well under a ms,
 * before its commit) and that small requests still share group commits.
 */
export const DISPATCH_WINDOW_MS = 20;

/** Until a lane's calls have been measured: a single event's cost, measured ~0.1 ms. */
const INITIAL_COST_MS = 0.1;

/** Weight of the newest measurement in a lane's cost per call. */
const COST_ALPHA = 0.2;

interface Waiting<T> {
  item: T;
  at: number;
}

interface Lane<T> {
  readonly name: string;
  readonly queue: Waiting<T>[];
  head: number;
  /** Estimated ms of work this lane has had dispatched: its place in the fair order. */
  served: number;
  /** Moving average of the measured pipeline-thread ms of its calls. */
  cost: number;
  /** Its calls dispatched and not done yet. */
  inFlight: number;
}

export class Lanes<T> {
  readonly #lanes = new Map<string, Lane<T>>();
  /** Lanes with calls waiting. */
  readonly #active = new Set<Lane<T>>();
  /** Estimated ms of dispatched calls not done yet. */
  #inFlightMs = 0;
  #inFlight = 0;
  /** The fair order's clock: the `served` of the lane dispatched last, before its call. */
  #virtual = 0;

  constructor(private readonly now: () => number = performance.now.bind(performance)) {}

  /** Queues a call of `lane`; `dispatch` sends what the window allows. */
  push(lane: string, item: T): void {
    let l = this.#lanes.get(lane);
    if (!l)
      this.#lanes.set(
        lane,
        (l = { name: lane, queue: [], head: 0, served: 0, cost: INITIAL_COST_MS, inFlight: 0 }),
      );
    if (!this.#active.has(l)) {
      // A lane that was idle takes its turn from now: it does not bank the service it missed.
      l.served = Math.max(l.served, this.#virtual);
      this.#active.add(l);
    }
    l.queue.push({ item, at: this.now() });
  }

  /**
   * Takes the calls to send now, fairest first, while the work in flight stays under the window
   * (one call always goes when nothing is in flight, however large). Each comes with the cost it was
   * dispatched at, to give back to `done`.
   */
  dispatch(send: (item: T, lane: string, estimate: number) => void): void {
    while (this.#active.size > 0) {
      let next: Lane<T> | undefined;
      for (const l of this.#active) if (!next || l.served < next.served) next = l;
      const lane = next!;
      if (this.#inFlight > 0 && this.#inFlightMs + lane.cost > DISPATCH_WINDOW_MS) return;
      const { item } = lane.queue[lane.head]!;
      lane.queue[lane.head++] = undefined as never;
      if (lane.head === lane.queue.length) {
        lane.queue.length = 0;
        lane.head = 0;
        this.#active.delete(lane);
      }
      this.#virtual = lane.served;
      lane.served += lane.cost;
      lane.inFlight++;
      this.#inFlightMs += lane.cost;
      this.#inFlight++;
      send(item, lane.name, lane.cost);
    }
  }

  /** A dispatched call is done: `estimate` as dispatched, `ms` as measured (if it was). */
  done(lane: string, estimate: number, ms: number | undefined): void {
    this.#inFlight--;
    this.#inFlightMs = this.#inFlight === 0 ? 0 : this.#inFlightMs - estimate;
    const l = this.#lanes.get(lane);
    if (!l) return;
    l.inFlight--;
    if (ms !== undefined) l.cost += COST_ALPHA * (Math.max(ms, 0.01) - l.cost);
  }

  /** How long the oldest waiting call of `lane` has waited, in ms (0 when none waits). */
  waitOf(lane: string): number {
    const l = this.#lanes.get(lane);
    if (!l || !this.#active.has(l)) return 0;
    return this.now() - l.queue[l.head]!.at;
  }

  /**
   * How long a call of `lane` pushed now would wait, estimated in ms: the work in flight, then its
   * lane's waiting work, served in turn with the other lanes', each of which goes first for as much
   * of its own work as `lane` has before it (what the fair order does). The age of the oldest call
   * (`waitOf`) tells only once the queue has stood: at 3x capacity a lane took in 250 ms x 3 of
   * work before its head was 250 ms old, and the last admitted waited ~1 s (202 p99 0.98-1.77 s in
   * bench:overload, 2026-12-06).
   */
  expectedWaitOf(lane: string): number {
    const l = this.#lanes.get(lane);
    const own = l && this.#active.has(l) ? (l.queue.length - l.head) * l.cost : 0;
    let wait = this.#inFlightMs + own;
    for (const other of this.#active)
      if (other !== l)
        wait += Math.min((other.queue.length - other.head) * other.cost, own + (l?.cost ?? INITIAL_COST_MS));
    return wait;
  }

  /** Whether a lane other than `lane` has calls waiting or in flight: it shares the thread now. */
  othersBusy(lane: string): boolean {
    for (const l of this.#lanes.values())
      if (l.name !== lane && (l.inFlight > 0 || this.#active.has(l))) return true;
    return false;
  }

  /** Calls waiting in every lane. */
  get waiting(): number {
    let n = 0;
    for (const l of this.#active) n += l.queue.length - l.head;
    return n;
  }

  /** Forgets every waiting call (the thread died); returns them. */
  drain(): T[] {
    const all: T[] = [];
    for (const l of this.#active) {
      for (let i = l.head; i < l.queue.length; i++) all.push(l.queue[i]!.item);
      l.queue.length = 0;
      l.head = 0;
    }
    this.#active.clear();
    return all;
  }
}
