'use strict';
// Admin provisioning and the RTM websocket through the unmodified
// @slack/rtm-api RTMClient. Each RTM test runs twice: [ticket] takes the
// websocket URL from the admin API, [rtm.connect] lets the SDK call
// rtm.connect on the Web API as it does against Slack.

const assert = require('node:assert/strict');
const { MODES, QUIET, sleep, suite } = require('../lib/harness');

const TS = /^\d{10}\.\d{6}$/;
const { it } = suite('admin_rtm server');

it('admin API provisions users, channels, members and tickets', async (server) => {
  const alice = await server.createUser();
  const bot = await server.createUser({ bot: true });
  assert.notEqual(alice.id, bot.id);
  assert.match(alice.id, /^U/);
  const channel = await server.createChannel();
  assert.match(channel, /^C/);
  await server.addMember(channel, alice.id);
  let r = await server.admin('POST', `/v1/channels/${channel}/members`, { user: alice.id }, { expectOk: false });
  assert.deepEqual([r.status, r.answer], [409, { ok: false, error: 'already_in_channel' }]);
  r = await server.admin('POST', '/v1/tickets', { user: 'UNOSUCHUSER' }, { expectOk: false });
  assert.deepEqual([r.status, r.answer.error], [404, 'user_not_found']);
  const url = new URL(await server.ticket(alice.id));
  assert.ok(url.pathname.length > 1, 'ticket URL needs a non-empty path');
});

for (const mode of MODES) {
  it(`[${mode}] connect: hello, then the SDK is ready`, async (server) => {
    const alice = await server.createUser();
    const r = server.rtm(alice, mode);
    const started = await r.start(undefined, { ready: true });
    assert.equal(started.self.id, alice.id);
    assert.equal(r.rtm.activeUserId, alice.id);
    assert.equal(r.events[0].type, 'hello', 'hello is the first frame');
    assert.equal(r.rtm.connected, true);
    assert.equal(r.urlRequests.length, 1);
    const url = new URL(r.urlRequests[0]);
    assert.equal(url.protocol, 'ws:');
    assert.equal(url.hostname, '127.0.0.1');
    assert.ok(url.pathname.length > 1);
  });

  it(`[${mode}] an event published by the backend reaches the client`, async (server) => {
    const alice = await server.createUser();
    const channel = await server.channelWith(alice);
    const r = server.rtm(alice, mode);
    const got = new Promise((resolve) => r.rtm.on('message', resolve));
    await r.start();
    const answer = await server.publish(channel, { type: 'message', text: 'from the backend', user: alice.id });
    assert.match(answer.ts, TS);
    const ev = await got;
    assert.equal(ev.text, 'from the backend');
    assert.equal(ev.ts, answer.ts);
    assert.equal(ev.channel, channel);
  });

  it(`[${mode}] JSON ping keepalive: the client stays connected past its pong timeout`, async (server) => {
    const alice = await server.createUser();
    const r = server.rtm(alice, mode, { clientPingTimeout: 300, serverPongTimeout: 250 });
    const pings = [];
    r.rtm.on('outgoing_message', (m) => {
      if (m.type === 'ping') pings.push(m.id);
    });
    await r.start(undefined, { ready: true }); // keepalive starts at ready
    await sleep(3000);
    const pongs = r.events.filter((e) => e.type === 'pong');
    assert.ok(pings.length >= 5, `only ${pings.length} pings in 3 s`);
    assert.ok(pongs.length >= pings.length - 1, `${pings.length} pings, ${pongs.length} pongs`);
    for (const p of pongs) {
      assert.equal(typeof p.reply_to, 'number');
      assert.ok(pings.includes(p.reply_to), `pong for unknown ping ${p.reply_to}`);
    }
    assert.deepEqual(r.states.filter((s) => s === 'reconnecting' || s === 'disconnected'), []);
    assert.equal(r.rtm.connected, true);
    assert.equal(r.urlRequests.length, 1);
  });

  it(`[${mode}] sendTyping: user_typing reaches others, not the typist`, async (server) => {
    const typist = await server.createUser();
    const other = await server.createUser();
    const channel = await server.channelWith(typist, other);
    const a = server.rtm(typist, mode);
    const b = server.rtm(other, mode);
    await Promise.all([a.start(), b.start()]);
    await a.rtm.sendTyping(channel);
    const ev = await b.waitType('user_typing', { channel });
    assert.equal(ev.user, typist.id);
    await a.assertNone((e) => e.type === 'user_typing' || e.type === 'error' || e.ok === false, { what: 'typing echo or error' });
  });

  it(`[${mode}] sendMessage resolves with the reply, and everyone gets the message`, async (server) => {
    const sender = await server.createUser();
    const other = await server.createUser();
    const channel = await server.channelWith(sender, other);
    const a = server.rtm(sender, mode);
    const b = server.rtm(other, mode);
    await Promise.all([a.start(), b.start()]);
    const reply = await a.rtm.sendMessage('hello over rtm', channel);
    assert.equal(reply.ok, true);
    assert.equal(typeof reply.reply_to, 'number');
    assert.match(reply.ts, TS);
    assert.equal(reply.text, 'hello over rtm');
    const ev = await b.waitType('message', { ts: reply.ts });
    assert.equal(ev.user, sender.id);
    assert.equal(ev.channel, channel);
    assert.equal(ev.text, 'hello over rtm');
    await a.waitType('message', { ts: reply.ts }); // sender included

    // A refused message rejects the promise with the server's error.
    const elsewhere = await server.createChannel();
    await assert.rejects(a.rtm.sendMessage('not a member', elsewhere), (err) => {
      assert.equal(err.code, 'slack_rtmapi_send_message_platform_error');
      assert.equal(err.data.ok, false);
      assert.equal(typeof err.data.error.code, 'number');
      assert.equal(typeof err.data.error.msg, 'string');
      return true;
    });
  });

  it(`[${mode}] subscribePresence: presence_change for the watched user`, async (server) => {
    const watcherUser = await server.createUser();
    const watched = await server.createUser();
    const w = server.rtm(watcherUser, mode);
    await w.start();
    await w.rtm.subscribePresence([watched.id]);
    await w.waitType('presence_change', { user: watched.id, presence: 'away' });
    let seen = w.events.length;
    const x = server.rtm(watched, mode);
    await x.start();
    await w.waitType('presence_change', { user: watched.id, presence: 'active' }, { after: seen });
    assert.deepEqual(await server.presence(watched.id), { [watched.id]: 'active' });
    seen = w.events.length;
    await x.close();
    await w.waitType('presence_change', { user: watched.id, presence: 'away' }, { after: seen });
  });

  it(`[${mode}] member_joined_channel / member_left_channel, and subscriptions follow`, async (server) => {
    const member = await server.createUser();
    const joiner = await server.createUser();
    const channel = await server.channelWith(member);
    const m = server.rtm(member, mode);
    const j = server.rtm(joiner, mode);
    await Promise.all([m.start(), j.start()]);
    await server.addMember(channel, joiner.id);
    const ev = await m.waitType('member_joined_channel', { user: joiner.id });
    assert.equal(ev.channel, channel);
    assert.equal(ev.channel_type, 'C');
    const answer = await server.publish(channel, { type: 'message', text: 'welcome', user: member.id });
    assert.equal((await j.waitType('message', { text: 'welcome' })).ts, answer.ts);
    await server.admin('DELETE', `/v1/channels/${channel}/members/${joiner.id}`);
    await m.waitType('member_left_channel', { user: joiner.id, channel });
    const seen = j.events.length;
    await server.publish(channel, { type: 'message', text: 'after leaving', user: member.id });
    await m.waitType('message', { text: 'after leaving' });
    await j.assertNone((e) => e.text === 'after leaving', { ms: QUIET, after: seen });
  });
}
