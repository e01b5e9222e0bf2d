/**
 * The tenants' lanes in front of the pipeline thread (src/runtime/lanes.ts), on a clock of our own:
 * the window bounds the work in flight, the least-served lane goes next, and a lane's wait is the
 * age of its oldest call.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { DISPATCH_WINDOW_MS, Lanes } from '../dist/runtime/lanes.js';

function lanes(): { l: Lanes<string>; clock: { t: number }; sent: [string, string, number][] } {
  const clock = { t: 0 };
  return { l: new Lanes<string>(() => clock.t), clock, sent: [] };
}

describe('lanes', () => {
  it('keeps the estimated work in flight under the window, one call at least', () => {
    const { l, sent } = lanes();
    const send = (item: string, lane: string, estimate: number): void =>
      void sent.push([item, lane, estimate]);
    for (let i = 0; i < 10; i++) l.push('a', `a${i}`);
    l.dispatch(send);
    assert.equal(sent.length, 10, 'ten calls at the first estimate (0.1 ms) fit');
    // Measured at 15 ms a call, again and again: then the window holds one call at a time.
    for (let k = 0; k < 30; k++) {
      for (const [, lane, estimate] of sent.splice(0)) l.done(lane, estimate, 15);
      l.push('a', `warm${k}`);
      l.dispatch(send);
    }
    for (const [, lane, estimate] of sent.splice(0)) l.done(lane, estimate, 15);
    for (let i = 10; i < 20; i++) l.push('a', `a${i}`);
    l.dispatch(send);
    assert.equal(sent.length, Math.max(1, Math.floor(DISPATCH_WINDOW_MS / 15)));
    l.dispatch(() => assert.fail('nothing goes while the window is full'));
    const order: string[] = [];
    while (sent.length > 0) {
      const [item, lane, estimate] = sent.shift()!;
      order.push(item);
      l.done(lane, estimate, 15);
      l.dispatch(send);
    }
    assert.deepEqual(
      order,
      Array.from({ length: 10 }, (_, i) => `a${10 + i}`),
      "every call goes, in its lane's order",
    );
  });

  it('serves the lane that had least, so a light tenant does not wait behind a flood', () => {
    const { l, sent } = lanes();
    const send = (item: string, lane: string, estimate: number): void =>
      void sent.push([item, lane, estimate]);
    // Teach both lanes their cost: 10 ms a call.
    l.push('a', 'warm-a');
    l.push('b', 'warm-b');
    l.dispatch(send);
    for (const [, lane, estimate] of sent.splice(0)) l.done(lane, estimate, 10);
    for (let k = 0; k < 10; k++) {
      l.dispatch(() => {});
      l.push('a', 'x');
      l.push('b', 'x');
      l.dispatch(send);
      for (const [, lane, estimate] of sent.splice(0)) l.done(lane, estimate, 10);
    }
    // Now a floods and b sends one call.
    for (let i = 0; i < 50; i++) l.push('a', `a${i}`);
    l.dispatch(send);
    l.push('b', 'b0');
    const order: string[] = [];
    while (order.length < 51) {
      l.dispatch(send);
      const next = sent.shift();
      assert.ok(next, 'something is in flight');
      order.push(next[0]);
      l.done(next[1], next[2], 10);
    }
    assert.ok(order.indexOf('b0') <= 3, `b0 went ${order.indexOf('b0')}th: ${order.slice(0, 6).join(' ')}`);
  });

  it("measures a lane's wait as the age of its oldest call, and knows who else is busy", () => {
    const { l, clock } = lanes();
    assert.equal(l.waitOf('a'), 0);
    l.push('a', 'a0');
    clock.t = 30;
    l.push('a', 'a1');
    clock.t = 50;
    assert.equal(l.waitOf('a'), 50);
    assert.equal(l.othersBusy('a'), false);
    l.push('b', 'b0');
    assert.equal(l.othersBusy('a'), true);
    const sent: [string, number][] = [];
    l.dispatch((item, lane, estimate) => sent.push([lane, estimate]));
    assert.equal(l.waitOf('a'), 0, 'nothing waits once dispatched');
    assert.equal(l.othersBusy('a'), true, 'b is in flight');
    for (const [lane, estimate] of sent) l.done(lane, estimate, 1);
    assert.equal(l.othersBusy('a'), false);
    assert.equal(l.waiting, 0);
  });

  it('estimates the wait of a new call from the work queued ahead of it, each other lane going first for as much as its own', () => {
    const { l, clock } = lanes();
    const near = (actual: number, expected: number, what: string): void =>
      assert.ok(Math.abs(actual - expected) < 1e-9, `${what}: ${actual} vs ${expected}`);
    // 100 calls of tenant a at the first estimate (0.1 ms), none dispatched yet, all pushed now.
    for (let i = 0; i < 100; i++) l.push('a', `a${i}`);
    assert.equal(l.waitOf('a'), 0, 'the oldest has not waited yet');
    near(l.expectedWaitOf('a'), 10, 'a new call of a waits behind its 100');
    near(l.expectedWaitOf('b'), 0.1, 'a new call of b waits for one of a: the fair order');
    for (let i = 0; i < 5; i++) l.push('b', `b${i}`);
    near(l.expectedWaitOf('a'), 10.5, "a's own 10 ms and all of b's 0.5");
    near(l.expectedWaitOf('b'), 1.1, "b's own 0.5 ms and as much of a's as b's and the new one's (0.6)");
    clock.t = 300;
    assert.equal(l.waitOf('a'), 300);
  });
});
