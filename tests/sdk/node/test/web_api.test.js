'use strict';
// The Web API (/api/<method>) through the unmodified @slack/web-api
// WebClient, with events observed by unmodified @slack/rtm-api clients that
// connect the SDK's own way (rtm.connect). Node sends every method as an
// application/x-www-form-urlencoded body (objects such as blocks
// JSON-encoded in a field, booleans as "true"/"false").

const assert = require('node:assert/strict');
const { WebClient, LogLevel } = require('@slack/web-api');
const { sleep, suite, unique } = require('../lib/harness');

const TS = /^\d{10}\.\d{6}$/;
const MISSING_TS = '1000000000.000001';
const { it } = suite('web_api server');

/** The error code of a call that must fail as Slack fails: HTTP 200 with
 *  {"ok":false,"error":…}, which the SDK raises as a platform error (any
 *  other status would be an HTTP error, retried for half an hour by default). */
async function apiError(promise) {
  let error;
  await assert.rejects(promise, (err) => {
    error = err;
    return true;
  });
  assert.equal(error.code, 'slack_webapi_platform_error', `expected a platform error, got ${error.code}: ${error.message}`);
  assert.equal(error.data.ok, false);
  return error.data.error;
}

async function observer(server, ...channels) {
  const user = await server.createUser();
  for (const c of channels) await server.addMember(c, user.id);
  const r = server.rtm(user, 'rtm.connect');
  await r.start();
  return r;
}

const tsList = (messages) => messages.map((m) => m.ts);

it('api.test answers, an unknown method is unknown_method (HTTP 200)', async (server) => {
  const web = server.web(await server.createUser());
  assert.equal((await web.api.test()).ok, true);
  assert.equal(await apiError(web.apiCall('transponder.noSuchMethod')), 'unknown_method');
});

it('not_authed without a token, invalid_auth with a bad one', async (server) => {
  const alice = await server.createUser();
  assert.equal(await apiError(server.web(undefined).auth.test()), 'not_authed');
  assert.equal(await apiError(server.web('xoxp-not-a-real-token').auth.test()), 'invalid_auth');
  const last = alice.token.slice(-1);
  const tampered = alice.token.slice(0, -1) + (last === '0' ? '1' : '0');
  assert.equal(await apiError(server.web(tampered).auth.test()), 'invalid_auth');
  // A token given per call (the SDK sends it as a bearer header and as a
  // `token` form field).
  const bare = new WebClient(undefined, { slackApiUrl: server.api, retryConfig: { retries: 2, minTimeout: 0, maxTimeout: 1 }, logLevel: LogLevel.ERROR });
  const viaField = await bare.auth.test({ token: alice.token });
  assert.equal(viaField.user_id, alice.id);
});

it('auth.test: identity, bot_id only for bot tokens', async (server) => {
  const alice = await server.createUser();
  const bot = await server.createUser({ bot: true });
  const a = await server.web(alice).auth.test();
  assert.equal(a.user_id, alice.id);
  assert.equal(a.user, alice.name);
  assert.match(a.team_id, /^T/);
  assert.ok(a.team && a.url);
  assert.ok(!a.bot_id, 'a user token has no bot_id');
  const b = await server.web(bot).auth.test();
  assert.equal(b.user_id, bot.id);
  assert.equal(b.team_id, a.team_id);
  assert.match(b.bot_id, /^B/);
});

it('rtm.connect: url, self, team; batch_presence_aware gives the batch form', async (server) => {
  const alice = await server.createUser();
  const watched = await server.createUser();
  const web = server.web(alice);
  const teamId = (await web.auth.test()).team_id;
  const r = await web.rtm.connect({ batch_presence_aware: true, presence_sub: true });
  const url = new URL(r.url);
  assert.equal(url.protocol, 'ws:');
  assert.equal(url.hostname, '127.0.0.1');
  assert.ok(url.pathname.length > 1);
  assert.equal(r.self.id, alice.id);
  assert.equal(r.self.name, alice.name);
  assert.equal(r.team.id, teamId);
  assert.ok('name' in r.team && 'domain' in r.team);

  // Through the RTM client: start options go to rtm.connect.
  const w = server.rtm(alice, 'rtm.connect');
  await w.start({ batch_presence_aware: true });
  await w.rtm.subscribePresence([watched.id]);
  const ev = await w.waitFor((e) => e.type === 'presence_change' && Array.isArray(e.users), { what: 'batch presence_change' });
  assert.deepEqual(ev.users, [watched.id]);
  assert.equal(ev.presence, 'away');
});

it('chat.postMessage: answer, and the same ts in the RTM message event', async (server) => {
  const alice = await server.createUser();
  const channel = await server.channelWith(alice);
  const obs = await observer(server, channel);
  const web = server.web(alice);
  const teamId = (await web.auth.test()).team_id;
  const blocks = [{ type: 'section', text: { type: 'mrkdwn', text: '*bold* hello' } }];
  const got = new Promise((resolve) => obs.rtm.on('message', (e) => e.text === 'hello rtm' && resolve(e)));
  const answer = await web.chat.postMessage({ channel, text: 'hello rtm', blocks });
  assert.equal(answer.channel, channel);
  assert.match(answer.ts, TS);
  assert.equal(answer.message.type, 'message');
  assert.equal(answer.message.user, alice.id);
  assert.equal(answer.message.text, 'hello rtm');
  assert.equal(answer.message.ts, answer.ts);
  assert.equal(answer.message.team, teamId);
  const ev = await within10(got);
  assert.equal(ev.ts, answer.ts);
  assert.equal(ev.channel, channel);
  assert.equal(ev.user, alice.id);
  assert.equal(ev.team, teamId);
  assert.ok(ev.event_ts);
  assert.deepEqual(ev.blocks, blocks);
  const name = (await web.conversations.info({ channel })).channel.name;
  const byName = await web.chat.postMessage({ channel: name, text: 'by name' });
  assert.equal(byName.channel, channel);
  assert.equal((await obs.waitType('message', { text: 'by name' })).ts, byName.ts);
  assert.ok(byName.ts > answer.ts);
});

function within10(promise) {
  return Promise.race([promise, sleep(10000).then(() => { throw new Error('no event within 10 s'); })]);
}

it('chat.postMessage errors: channel_not_found, not_in_channel, no_text', async (server) => {
  const alice = await server.createUser();
  const mine = await server.channelWith(alice);
  const other = await server.createChannel();
  const web = server.web(alice);
  assert.equal(await apiError(web.chat.postMessage({ channel: 'CNOSUCHCHAN', text: 'x' })), 'channel_not_found');
  assert.equal(await apiError(web.chat.postMessage({ channel: other, text: 'x' })), 'not_in_channel');
  assert.equal(await apiError(web.chat.postMessage({ channel: mine })), 'no_text');
});

it('conversations.history: windows and cursor pagination over 250 messages', async (server) => {
  const alice = await server.createUser();
  const channel = await server.channelWith(alice);
  const web = server.web(alice);
  const t = [];
  for (let i = 0; i < 250; i += 1) {
    t.push((await web.chat.postMessage({ channel, text: `m${String(i).padStart(3, '0')}` })).ts);
  }
  for (const ts of t) assert.match(ts, TS);
  // Fixed-width "<10 digits>.<6 digits>": string order is numeric order.
  for (let i = 1; i < t.length; i += 1) assert.ok(t[i] > t[i - 1], `ts must strictly increase: ${t[i - 1]} then ${t[i]}`);
  assert.equal(new Set(t).size, 250);
  const newestFirst = [...t].reverse();
  const hist = (args) => web.conversations.history({ channel, ...args });

  const pages = [];
  let cursor;
  for (;;) {
    const page = await hist({ limit: 100, ...(cursor ? { cursor } : {}) });
    pages.push(page);
    for (const m of page.messages) {
      assert.equal(m.type, 'message');
      assert.equal(m.user, alice.id);
      assert.equal(m.text, `m${String(t.indexOf(m.ts)).padStart(3, '0')}`);
    }
    cursor = page.response_metadata.next_cursor;
    if (!page.has_more) break;
    assert.ok(cursor, 'has_more without a next_cursor');
    assert.ok(pages.length < 10, 'pagination does not end');
  }
  assert.deepEqual(pages.map((p) => p.messages.length), [100, 100, 50]);
  assert.deepEqual(pages.map((p) => p.has_more), [true, true, false]);
  assert.equal(pages[2].response_metadata.next_cursor, '');
  assert.deepEqual(pages.flatMap((p) => tsList(p.messages)), newestFirst);

  // The SDK's own paginate() follows next_cursor until it is "".
  const viaSdk = [];
  for await (const page of web.paginate('conversations.history', { channel, limit: 100 })) viaSdk.push(...tsList(page.messages));
  assert.deepEqual(viaSdk, newestFirst);

  assert.deepEqual(tsList((await hist({ oldest: t[10], latest: t[20] })).messages), t.slice(11, 20).reverse());
  let r = await hist({ oldest: t[10], latest: t[20], inclusive: true });
  assert.deepEqual(tsList(r.messages), t.slice(10, 21).reverse());
  assert.equal(r.has_more, false);
  r = await hist({ latest: t[5] });
  assert.deepEqual(tsList(r.messages), t.slice(0, 5).reverse());
  assert.equal(r.has_more, false);
  assert.deepEqual(tsList((await hist({ latest: t[5], inclusive: true })).messages), t.slice(0, 6).reverse());
  r = await hist({ oldest: t[240] });
  assert.deepEqual(tsList(r.messages), t.slice(241).reverse());
  assert.equal(r.has_more, false);
  assert.deepEqual((await hist({ oldest: t[249] })).messages, []);

  const sizes = [];
  const seen = [];
  cursor = undefined;
  for (;;) {
    const page = await hist({ oldest: t[9], latest: t[200], inclusive: true, limit: 50, ...(cursor ? { cursor } : {}) });
    sizes.push(page.messages.length);
    seen.push(...tsList(page.messages));
    cursor = page.response_metadata.next_cursor;
    if (!page.has_more) {
      assert.equal(cursor, '');
      break;
    }
    assert.ok(sizes.length < 10);
  }
  assert.deepEqual(sizes, [50, 50, 50, 42]);
  assert.deepEqual(seen, t.slice(9, 201).reverse());
});

it('reactions.add/remove: events, reactions in history, already_reacted, no_reaction', async (server) => {
  const alice = await server.createUser();
  const bob = await server.createUser();
  const channel = await server.channelWith(alice, bob);
  const obs = await observer(server, channel);
  const wa = server.web(alice);
  const wb = server.web(bob);
  const ts = (await wa.chat.postMessage({ channel, text: 'react to me' })).ts;
  const reactions = async () => {
    const msgs = (await wa.conversations.history({ channel })).messages.filter((m) => m.ts === ts);
    assert.equal(msgs.length, 1);
    return msgs[0].reactions || [];
  };
  const byName = (list) => Object.fromEntries(list.map((x) => [x.name, x]));

  await wa.reactions.add({ channel, timestamp: ts, name: 'thumbsup' });
  let ev = await obs.waitType('reaction_added', { user: alice.id });
  assert.equal(ev.reaction, 'thumbsup');
  assert.equal(ev.item_user, alice.id);
  assert.deepEqual(ev.item, { type: 'message', channel, ts });
  assert.ok(ev.event_ts);
  await wb.reactions.add({ channel, timestamp: ts, name: 'thumbsup' });
  await wb.reactions.add({ channel, timestamp: ts, name: 'eyes' });
  await obs.waitType('reaction_added', { user: bob.id, reaction: 'eyes' });
  let got = byName(await reactions());
  assert.deepEqual(Object.keys(got).sort(), ['eyes', 'thumbsup']);
  assert.deepEqual([...got.thumbsup.users].sort(), [alice.id, bob.id].sort());
  assert.equal(got.thumbsup.count, 2);
  assert.deepEqual(got.eyes.users, [bob.id]);
  assert.equal(got.eyes.count, 1);

  assert.equal(await apiError(wa.reactions.add({ channel, timestamp: ts, name: 'thumbsup' })), 'already_reacted');
  await wa.reactions.remove({ channel, timestamp: ts, name: 'thumbsup' });
  ev = await obs.waitType('reaction_removed', { user: alice.id });
  assert.equal(ev.reaction, 'thumbsup');
  assert.deepEqual(ev.item, { type: 'message', channel, ts });
  got = byName(await reactions());
  assert.deepEqual(got.thumbsup.users, [bob.id]);
  assert.equal(got.thumbsup.count, 1);
  assert.equal(await apiError(wa.reactions.remove({ channel, timestamp: ts, name: 'thumbsup' })), 'no_reaction');
  await wb.reactions.remove({ channel, timestamp: ts, name: 'thumbsup' });
  await wb.reactions.remove({ channel, timestamp: ts, name: 'eyes' });
  assert.deepEqual(await reactions(), []);
  assert.equal(await apiError(wa.reactions.add({ channel, timestamp: MISSING_TS, name: 'eyes' })), 'message_not_found');
});

it('chat.update: message_changed event, history shows the edit', async (server) => {
  const alice = await server.createUser();
  const bob = await server.createUser();
  const channel = await server.channelWith(alice, bob);
  const obs = await observer(server, channel);
  const wa = server.web(alice);
  const changed = new Promise((resolve) => obs.rtm.on('message::message_changed', resolve));
  const ts = (await wa.chat.postMessage({ channel, text: 'before' })).ts;
  await obs.waitType('message', { ts });
  const answer = await wa.chat.update({ channel, ts, text: 'after' });
  assert.equal(answer.channel, channel);
  assert.equal(answer.ts, ts);
  assert.equal(answer.text, 'after');
  const ev = await within10(changed);
  assert.equal(ev.type, 'message');
  assert.equal(ev.hidden, true);
  assert.equal(ev.channel, channel);
  assert.ok(ev.ts && ev.event_ts);
  assert.equal(ev.message.ts, ts);
  assert.equal(ev.message.text, 'after');
  assert.equal(ev.message.edited.user, alice.id);
  assert.ok(ev.message.edited.ts);
  assert.equal(ev.previous_message.ts, ts);
  assert.equal(ev.previous_message.text, 'before');
  const msgs = (await wa.conversations.history({ channel })).messages.filter((m) => m.ts === ts);
  assert.equal(msgs.length, 1);
  assert.equal(msgs[0].text, 'after');
  assert.equal(await apiError(wa.chat.update({ channel, ts: MISSING_TS, text: 'x' })), 'message_not_found');
  assert.equal(await apiError(server.web(bob).chat.update({ channel, ts, text: 'hijack' })), 'cant_update_message');
});

it('chat.delete: message_deleted event, gone from history', async (server) => {
  const alice = await server.createUser();
  const bob = await server.createUser();
  const channel = await server.channelWith(alice, bob);
  const obs = await observer(server, channel);
  const wa = server.web(alice);
  const deleted = new Promise((resolve) => obs.rtm.on('message::message_deleted', resolve));
  const keep = (await wa.chat.postMessage({ channel, text: 'keep' })).ts;
  const ts = (await wa.chat.postMessage({ channel, text: 'doomed' })).ts;
  assert.equal(await apiError(server.web(bob).chat.delete({ channel, ts })), 'cant_delete_message');
  const answer = await wa.chat.delete({ channel, ts });
  assert.equal(answer.channel, channel);
  assert.equal(answer.ts, ts);
  const ev = await within10(deleted);
  assert.equal(ev.hidden, true);
  assert.equal(ev.channel, channel);
  assert.equal(ev.deleted_ts, ts);
  assert.ok(ev.event_ts);
  assert.equal(ev.previous_message.text, 'doomed');
  assert.deepEqual(tsList((await wa.conversations.history({ channel })).messages), [keep]);
  assert.equal(await apiError(wa.chat.delete({ channel, ts })), 'message_not_found');
});

it('threads: conversations.replies gives the parent first, then replies; reply_count', async (server) => {
  const alice = await server.createUser();
  const bob = await server.createUser();
  const channel = await server.channelWith(alice, bob);
  const obs = await observer(server, channel);
  const wa = server.web(alice);
  const wb = server.web(bob);
  const parent = (await wa.chat.postMessage({ channel, text: 'parent' })).ts;
  const replies = [];
  for (const [web, text] of [[wb, 'r1'], [wa, 'r2'], [wb, 'r3']]) {
    const a = await web.chat.postMessage({ channel, text, thread_ts: parent });
    assert.equal(a.message.thread_ts, parent);
    replies.push(a.ts);
  }
  const ev = await obs.waitType('message', { ts: replies[2] });
  assert.equal(ev.thread_ts, parent);
  const r = await wa.conversations.replies({ channel, ts: parent });
  assert.deepEqual(tsList(r.messages), [parent, ...replies]);
  const head = r.messages[0];
  assert.equal(head.text, 'parent');
  assert.equal(head.thread_ts, parent);
  assert.equal(head.reply_count, 3);
  assert.deepEqual([...head.reply_users].sort(), [alice.id, bob.id].sort());
  assert.equal(head.latest_reply, replies[2]);
  assert.deepEqual(r.messages.slice(1).map((m) => m.text), ['r1', 'r2', 'r3']);
  for (const m of r.messages.slice(1)) assert.equal(m.thread_ts, parent);
  assert.equal(r.has_more, false);

  // Paginated: the parent leads the first page; each reply comes once, in order.
  const got = [];
  let first = true;
  for await (const page of wa.paginate('conversations.replies', { channel, ts: parent, limit: 2 })) {
    if (first) assert.equal(page.messages[0].ts, parent);
    first = false;
    got.push(...tsList(page.messages));
    assert.ok(got.length < 20);
  }
  assert.deepEqual(got.filter((x) => x !== parent), replies);

  const inHistory = (await wa.conversations.history({ channel })).messages.filter((m) => m.ts === parent);
  assert.equal(inHistory.length, 1);
  assert.equal(inHistory[0].reply_count, 3);
  assert.equal(inHistory[0].latest_reply, replies[2]);
  assert.equal(await apiError(wa.conversations.replies({ channel, ts: MISSING_TS })), 'thread_not_found');
});

it('users.getPresence / users.setPresence, presence_change at a watcher', async (server) => {
  const alice = await server.createUser();
  const xUser = await server.createUser();
  const watcher = await observer(server);
  const x = server.rtm(xUser, 'rtm.connect');
  await x.start();
  await watcher.rtm.subscribePresence([xUser.id]);
  await watcher.waitType('presence_change', { user: xUser.id, presence: 'active' });
  const wa = server.web(alice);
  const wx = server.web(xUser);
  assert.equal((await wa.users.getPresence({ user: xUser.id })).presence, 'active');

  let seen = watcher.events.length;
  await wx.users.setPresence({ presence: 'away' });
  await watcher.waitType('presence_change', { user: xUser.id, presence: 'away' }, { after: seen });
  assert.equal((await wa.users.getPresence({ user: xUser.id })).presence, 'away');
  let me = await wx.users.getPresence(); // no user: self
  assert.equal(me.presence, 'away');
  assert.equal(me.manual_away, true);
  assert.equal(me.online, true);
  assert.equal(me.auto_away, false);
  assert.equal(me.connection_count, 1);
  assert.ok('last_activity' in me);

  seen = watcher.events.length;
  await wx.users.setPresence({ presence: 'auto' });
  await watcher.waitType('presence_change', { user: xUser.id, presence: 'active' }, { after: seen });
  me = await wx.users.getPresence();
  assert.equal(me.presence, 'active');
  assert.equal(me.manual_away, false);

  seen = watcher.events.length;
  await x.close();
  await watcher.waitType('presence_change', { user: xUser.id, presence: 'away' }, { after: seen });
  assert.equal((await wa.users.getPresence({ user: xUser.id })).presence, 'away');
  assert.equal(await apiError(wx.users.setPresence({ presence: 'busy' })), 'invalid_presence');
});

it('a message sent over RTM is in conversations.history', async (server) => {
  const sender = await server.createUser();
  const channel = await server.channelWith(sender);
  const r = server.rtm(sender, 'rtm.connect');
  await r.start();
  const reply = await r.rtm.sendMessage('typed live', channel);
  const msgs = (await server.web(sender).conversations.history({ channel })).messages;
  assert.deepEqual(msgs.map((m) => [m.ts, m.text, m.user]), [[reply.ts, 'typed live', sender.id]]);
});

it('conversations.create/info/invite/members/leave/join/list', async (server) => {
  const alice = await server.createUser();
  const bob = await server.createUser();
  const carol = await server.createUser();
  const watcher = await observer(server);
  const wa = server.web(alice);
  const wb = server.web(bob);
  const name = unique('conv');
  const created = (await wa.conversations.create({ name })).channel;
  const channel = created.id;
  for (const f of ['id', 'name', 'is_channel', 'is_group', 'is_im', 'is_private', 'is_archived', 'is_general',
    'created', 'creator', 'is_member', 'topic', 'purpose']) {
    assert.ok(f in created, `channel object lacks ${f}`);
  }
  assert.equal(created.name, name);
  assert.equal(created.creator, alice.id);
  assert.equal(created.is_member, true);
  assert.equal(created.is_channel, true);
  assert.equal(created.is_private, false);
  const ev = await watcher.waitFor((e) => e.type === 'channel_created' && e.channel.id === channel, { what: 'channel_created' });
  assert.equal(ev.channel.name, name);
  assert.equal(ev.channel.creator, alice.id);
  assert.equal(await apiError(wa.conversations.create({ name })), 'name_taken');

  const info = (await wa.conversations.info({ channel, include_num_members: true })).channel;
  assert.equal(info.id, channel);
  assert.equal(info.num_members, 1);
  assert.equal(await apiError(wa.conversations.info({ channel: 'CNOSUCHCHAN' })), 'channel_not_found');

  await wa.conversations.invite({ channel, users: `${bob.id},${carol.id}` });
  assert.equal(await apiError(wa.conversations.invite({ channel, users: bob.id })), 'already_in_channel');
  assert.equal(await apiError(wa.conversations.invite({ channel, users: 'UNOSUCHUSER' })), 'user_not_found');
  assert.equal(await apiError(wa.conversations.invite({ channel, users: alice.id })), 'cant_invite_self');
  const members = [];
  for await (const page of wa.paginate('conversations.members', { channel, limit: 2 })) members.push(...page.members);
  assert.deepEqual(members.sort(), [alice.id, bob.id, carol.id].sort());

  await wb.chat.postMessage({ channel, text: 'bob was here' });
  await wb.conversations.leave({ channel });
  assert.equal(await apiError(wb.conversations.leave({ channel })), 'not_in_channel');
  assert.equal(await apiError(wb.chat.postMessage({ channel, text: 'x' })), 'not_in_channel');
  assert.equal((await wb.conversations.join({ channel })).channel.id, channel);
  const again = await wb.conversations.join({ channel });
  assert.equal(again.channel.id, channel);
  assert.equal(again.warning, 'already_in_channel');

  const listed = [];
  for await (const page of wa.paginate('conversations.list', { limit: 50 })) listed.push(...page.channels.map((c) => c.id));
  assert.ok(listed.includes(channel));
  assert.equal(new Set(listed).size, listed.length);
});

it('users.info and users.list', async (server) => {
  const alice = await server.createUser();
  const bot = await server.createUser({ bot: true });
  const wa = server.web(alice);
  const teamId = (await wa.auth.test()).team_id;
  const u = (await wa.users.info({ user: alice.id })).user;
  assert.equal(u.id, alice.id);
  assert.equal(u.name, alice.name);
  assert.equal(u.team_id, teamId);
  assert.equal(u.deleted, false);
  assert.equal(u.is_bot, false);
  assert.equal(typeof u.profile, 'object');
  assert.ok('real_name' in u && 'tz' in u);
  assert.equal((await wa.users.info({ user: bot.id })).user.is_bot, true);
  assert.equal(await apiError(wa.users.info({ user: 'UNOSUCHUSER' })), 'user_not_found');
  const ids = [];
  for await (const page of wa.paginate('users.list', { limit: 3 })) {
    ids.push(...page.members.map((m) => m.id));
    assert.ok(ids.length < 10000);
  }
  assert.ok(ids.includes(alice.id) && ids.includes(bot.id));
  assert.equal(new Set(ids).size, ids.length);
});


it('chat.scheduleMessage / scheduledMessages.list / deleteScheduledMessage: fires at its time, once; list pages; errors', async (server) => {
  const alice = await server.createUser();
  const channel = await server.channelWith(alice);
  const obs = await observer(server, channel);
  const web = server.web(alice);
  const postAt = Math.floor(Date.now() / 1000) + 3;
  const blocks = [{ type: 'section', text: { type: 'mrkdwn', text: '*later*' } }];
  // Node sends every method form-encoded: post_at as text, blocks as JSON.
  const answer = await web.chat.scheduleMessage({ channel, post_at: postAt, text: 'later', blocks });
  assert.equal(answer.channel, channel);
  assert.equal(answer.post_at, postAt);
  assert.match(answer.scheduled_message_id, /^Q\d{10}$/);
  assert.equal(answer.message.type, 'delayed_message');
  assert.equal(answer.message.text, 'later');
  const doomed = await web.chat.scheduleMessage({ channel, post_at: postAt, text: 'doomed' });
  const extra = [];
  for (let i = 0; i < 3; i++) {
    extra.push((await web.chat.scheduleMessage({ channel, post_at: postAt + 3600 + i, text: `x${i}` })).scheduled_message_id);
  }

  const listed = await web.chat.scheduledMessages.list({ channel });
  const ids = listed.scheduled_messages.map((m) => m.id);
  assert.deepEqual(ids, [answer.scheduled_message_id, doomed.scheduled_message_id, ...extra]);
  const first = listed.scheduled_messages[0];
  assert.equal(first.channel_id, channel);
  assert.equal(first.post_at, postAt);
  assert.equal(first.text, 'later');
  assert.ok(first.date_created <= postAt);
  const paged = [];
  for await (const page of web.paginate('chat.scheduledMessages.list', { limit: 2 })) {
    paged.push(...page.scheduled_messages.map((m) => m.id));
  }
  assert.deepEqual(paged, ids);
  const window = await web.chat.scheduledMessages.list({ oldest: String(postAt + 3600), latest: String(postAt + 3601) });
  assert.deepEqual(window.scheduled_messages.map((m) => m.text), ['x0', 'x1']);

  await web.chat.deleteScheduledMessage({ channel, scheduled_message_id: doomed.scheduled_message_id });
  assert.equal(
    await apiError(web.chat.deleteScheduledMessage({ channel, scheduled_message_id: doomed.scheduled_message_id })),
    'invalid_scheduled_message_id',
  );
  for (const id of extra) await web.chat.deleteScheduledMessage({ channel, scheduled_message_id: id });

  const ev = await obs.waitType('message', { text: 'later' }, { timeout: 30000 });
  assert.ok(Date.now() >= postAt * 1000, 'not before its time');
  assert.equal(ev.channel, channel);
  assert.equal(ev.user, alice.id);
  assert.deepEqual(ev.blocks, blocks);
  assert.ok(Number(ev.ts) >= postAt);
  assert.deepEqual((await web.conversations.history({ channel })).messages.map((m) => m.text), ['later']);
  assert.deepEqual((await web.chat.scheduledMessages.list()).scheduled_messages, []);

  assert.equal(await apiError(web.chat.scheduleMessage({ channel, post_at: postAt - 3600, text: 'x' })), 'time_in_past');
  assert.equal(await apiError(web.chat.scheduleMessage({ channel, post_at: postAt + 121 * 86400, text: 'x' })), 'time_too_far');
  assert.equal(await apiError(web.chat.scheduleMessage({ channel: 'CNOSUCHCHAN', post_at: postAt + 60, text: 'x' })), 'channel_not_found');
  const other = await server.createChannel();
  assert.equal(await apiError(web.chat.scheduleMessage({ channel: other, post_at: postAt + 60, text: 'x' })), 'not_in_channel');
  assert.equal(
    await apiError(web.chat.deleteScheduledMessage({ channel, scheduled_message_id: 'Q0000000000' })),
    'invalid_scheduled_message_id',
  );
});
