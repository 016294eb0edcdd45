'use strict';
// Reconnection of the unmodified @slack/rtm-api RTMClient. The SDK does not
// act on a `goodbye` event itself: it reconnects (autoReconnect) when the
// websocket closes, asking rtm.connect for a new URL. Each test runs its own
// server:
// * a server close: the server closes (4000, slow consumer) a connection whose
//   outbound queue would pass --max-queue-bytes; one transient event larger
//   than the bound (4096, the minimum) does it at once;
// * drain (POST /v1/drain): goodbye, then close 4001; the gateway then stops
//   accepting, so only the attempt to reconnect can be observed.

const assert = require('node:assert/strict');
const { MODES, ownServerTest } = require('../lib/harness');

const QUEUE_BOUND = 4096;

for (const mode of MODES) {
  ownServerTest(`[${mode}] reconnects after the server closes the socket`, async (start) => {
    const server = await start(`small-queue server (${mode})`, ['--max-queue-bytes', String(QUEUE_BOUND)]);
    const alice = await server.createUser();
    const other = await server.createUser();
    const channel = await server.channelWith(alice, other);
    const r = server.rtm(alice, mode);
    await r.start(undefined, { ready: true });
    await server.publish(alice.id, { type: 'transponder_test_oversize', pad: 'x'.repeat(2 * QUEUE_BOUND) }, true);
    const close = await r.until(() => r.closes[0], { what: 'close' });
    assert.equal(close.code, 4000, `expected close 4000 (slow consumer), got ${close.code}`);
    await r.until(() => (r.states.includes('reconnecting') ? true : undefined), { what: 'reconnecting' });
    await r.until(() => (r.count('hello') === 2 ? true : undefined), { what: 'second hello' });
    await r.waitReady(2);
    assert.equal(r.urlRequests.length, 2);
    assert.notEqual(r.urlRequests[0], r.urlRequests[1]);
    const seen = r.events.length;
    const answer = await server.publish(channel, { type: 'message', text: 'after reconnect', user: other.id });
    assert.equal((await r.waitType('message', { text: 'after reconnect' }, { after: seen })).ts, answer.ts);
    const reply = await r.rtm.sendMessage('sent after reconnect', channel);
    assert.equal(reply.ok, true);
  });

  ownServerTest(`[${mode}] drain: goodbye, close 4001, and the client tries to reconnect`, async (start) => {
    const server = await start(`drained server (${mode})`);
    const alice = await server.createUser();
    const r = server.rtm(alice, mode);
    await r.start();
    await server.admin('POST', '/v1/drain');
    await r.waitType('goodbye');
    const close = await r.until(() => r.closes[0], { what: 'close' });
    assert.equal(close.code, 4001, `expected close 4001 (drain), got ${close.code}`);
    const goodbyeAt = r.events.findIndex((e) => e.type === 'goodbye');
    assert.equal(r.events.slice(goodbyeAt + 1).length, 0, 'nothing after goodbye');
    await r.until(() => (r.states.includes('reconnecting') && r.connectAttempts >= 2 ? true : undefined), { what: 'a reconnect attempt' });
    // The node no longer accepts: stop the SDK's retry loop.
    r.rtm.autoReconnect = false;
  });
}
