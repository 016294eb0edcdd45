"""Admin provisioning and the RTM websocket through the unmodified
slack_sdk.rtm_v2.RTMClient.

Each RTM test runs twice: ``[ticket]`` takes the websocket URL from the admin
API, ``[rtm.connect]`` lets the SDK get it the usual way (auth.test, then
rtm.connect on the Web API). RTM clients are bot users: RTMClient v2 drops
every event whose ``bot_id`` equals the ``bot_id`` auth.test gave it, and a
user token's auth.test has none, so with a user token ``None == None`` and
the SDK would deliver no event without a ``bot_id`` to ``@rtm.on`` listeners.
"""

import re
import time
import urllib.parse

import pytest

from conftest import MODES, QUIET

TS = re.compile(r"^\d{10}\.\d{6}$")


def test_admin_provisioning(server):
    alice = server.create_user()
    bot = server.create_user(bot=True)
    assert alice.token.startswith("xoxp-") and bot.token.startswith("xoxb-")
    assert alice.id != bot.id
    channel = server.create_channel()
    assert channel.startswith("C")
    server.add_member(channel, alice.id)
    # Adding twice is a conflict; unknown ids are 404; names are unique.
    status, answer = server.admin("POST", f"/v1/channels/{channel}/members", {"user": alice.id}, expect_ok=False)
    assert (status, answer) == (409, {"ok": False, "error": "already_in_channel"})
    status, answer = server.admin("POST", "/v1/tickets", {"user": "UNOSUCHUSER"}, expect_ok=False)
    assert status == 404 and answer["error"] == "user_not_found"
    name = f"dup-{channel.lower()}"
    server.create_channel(name)
    status, answer = server.admin("POST", "/v1/channels", {"name": name}, expect_ok=False)
    assert (status, answer) == (409, {"ok": False, "error": "name_taken"})
    # The admin API wants its token.
    saved = server.admin_token
    try:
        server.admin_token = "wrong"
        status, answer = server.admin("POST", "/v1/users", {"name": "x"}, expect_ok=False)
        assert (status, answer["error"]) == (401, "invalid_auth")
    finally:
        server.admin_token = saved
    url = server.ticket(alice.id)
    assert urllib.parse.urlparse(url).path not in ("", "/"), url


@pytest.mark.parametrize("mode", MODES)
def test_connect_and_hello(server, rtm_clients, mode):
    bot = server.create_user(bot=True)
    r = rtm_clients(server, bot, mode).connect()
    # hello is the very first frame, and the SDK dispatches it to listeners.
    assert r.frames[0].get("type") == "hello", r.frames[:3]
    assert r.count("hello") == 1
    assert len(r.url_requests) == 1
    parsed = urllib.parse.urlparse(r.url_requests[0])
    assert parsed.scheme == "ws" and parsed.hostname == "127.0.0.1" and parsed.path not in ("", "/")
    if mode == "rtm.connect":
        # RTMClient asked auth.test for its bot_id: a bot token has one.
        assert isinstance(r.rtm.bot_id, str) and r.rtm.bot_id, r.rtm.bot_id


@pytest.mark.parametrize("mode", MODES)
def test_published_event_reaches_client(server, rtm_clients, mode):
    bot = server.create_user(bot=True)
    channel = server.channel_with(bot)
    r = rtm_clients(server, bot, mode).connect()
    answer = server.publish(channel, {"type": "message", "text": "from the backend", "user": bot.id})
    assert TS.match(answer["ts"]), answer
    ev = r.wait_type("message", text="from the backend")
    assert ev["channel"] == channel and ev["ts"] == answer["ts"]


@pytest.mark.parametrize("mode", MODES)
def test_json_ping_pong(server, rtm_clients, mode):
    bot = server.create_user(bot=True)
    r = rtm_clients(server, bot, mode).connect()
    r.send({"id": 41, "type": "ping", "time": 1234567, "note": "echo me"})
    pong = r.wait_type("pong")
    assert pong == {"type": "pong", "reply_to": 41, "time": 1234567, "note": "echo me"}
    assert isinstance(pong["reply_to"], int)


@pytest.mark.parametrize("mode", MODES)
def test_websocket_ping_frames_keep_the_session(server, rtm_clients, mode):
    """The SDK sends a ping frame at connect and every ping_interval (1 s
    here), and drops a session that has had no matching pong for more than
    4 intervals. Past that, the first session must still be the one."""
    bot = server.create_user(bot=True)
    r = rtm_clients(server, bot, mode, ping_interval=1).connect()
    session = r.rtm.session_id()
    time.sleep(6.5)
    assert r.rtm.is_connected()
    assert r.rtm.session_id() == session, "the SDK replaced its session: pongs missing or wrong"
    last = r.rtm.current_session.last_ping_pong_time
    assert last is not None, "no pong frame echoing the SDK's ping payload"
    assert time.time() - last < 3.0, f"last pong {time.time() - last:.1f}s ago"
    assert r.count("hello") == 1 and len(r.url_requests) == 1


@pytest.mark.parametrize("mode", MODES)
def test_typing_reaches_others_not_typist(server, rtm_clients, mode):
    typist = server.create_user(bot=True)
    other = server.create_user(bot=True)
    channel = server.channel_with(typist, other)
    a = rtm_clients(server, typist, mode).connect()
    b = rtm_clients(server, other, mode).connect()
    a.send({"id": 7, "type": "typing", "channel": channel})
    ev = b.wait_type("user_typing", channel=channel)
    assert ev["user"] == typist.id
    # No reply (it succeeded) and no echo to the typist.
    a.assert_none(lambda e: e.get("type") == "user_typing" or e.get("reply_to") == 7, what="typing echo or reply")


@pytest.mark.parametrize("mode", MODES)
def test_rtm_message_send(server, rtm_clients, mode):
    sender = server.create_user(bot=True)
    other = server.create_user(bot=True)
    channel = server.channel_with(sender, other)
    a = rtm_clients(server, sender, mode).connect()
    b = rtm_clients(server, other, mode).connect()
    a.send({"id": 12, "type": "message", "channel": channel, "text": "hello over rtm"})
    reply = a.wait_frame(lambda f: f.get("reply_to") == 12, what="reply to 12")
    assert reply["ok"] is True and TS.match(reply["ts"]) and reply["text"] == "hello over rtm", reply
    ev = b.wait_type("message", text="hello over rtm")
    assert ev["ts"] == reply["ts"] and ev["user"] == sender.id and ev["channel"] == channel
    # The sender gets the event too (RTMClient may filter its own bot_id, so raw frames).
    a.wait_frame(lambda f: f.get("type") == "message" and f.get("ts") == reply["ts"], what="own message event")

    # A failed client message: {"ok":false,"reply_to":N,"error":{"code","msg"}}.
    elsewhere = server.create_channel()
    a.send({"id": 13, "type": "message", "channel": elsewhere, "text": "not a member"})
    err = a.wait_frame(lambda f: f.get("reply_to") == 13, what="reply to 13")
    assert err["ok"] is False and isinstance(err["error"]["code"], int) and err["error"]["msg"], err
    a.send({"id": 14, "type": "message", "channel": channel})
    err = a.wait_frame(lambda f: f.get("reply_to") == 14, what="reply to 14")
    assert err["ok"] is False and isinstance(err["error"]["code"], int), err


@pytest.mark.parametrize("mode", MODES)
def test_presence_sub(server, rtm_clients, mode):
    watcher_user = server.create_user(bot=True)
    watched = server.create_user(bot=True)
    w = rtm_clients(server, watcher_user, mode).connect()
    w.send({"type": "presence_sub", "ids": [watched.id]})
    # Newly watched: its current state first.
    w.wait_type("presence_change", user=watched.id, presence="away")
    seen = len(w.events)
    x = rtm_clients(server, watched, mode).connect()
    w.wait_type("presence_change", user=watched.id, presence="active", after=seen)
    assert server.presence(watched.id) == {watched.id: "active"}
    seen = len(w.events)
    x.close()
    w.wait_type("presence_change", user=watched.id, presence="away", after=seen)
    # presence_query answers for each id.
    seen = len(w.events)
    w.send({"type": "presence_query", "ids": [watched.id, watcher_user.id]})
    w.wait_type("presence_change", user=watcher_user.id, presence="active", after=seen)
    w.wait_type("presence_change", user=watched.id, presence="away", after=seen)


@pytest.mark.parametrize("mode", MODES)
def test_membership_events(server, rtm_clients, mode):
    member = server.create_user(bot=True)
    joiner = server.create_user(bot=True)
    channel = server.channel_with(member)
    m = rtm_clients(server, member, mode).connect()
    j = rtm_clients(server, joiner, mode).connect()
    server.add_member(channel, joiner.id)
    ev = m.wait_type("member_joined_channel", user=joiner.id)
    assert ev["channel"] == channel and ev["channel_type"] == "C"
    # The joiner's live connection now receives the channel.
    answer = server.publish(channel, {"type": "message", "text": "welcome", "user": member.id})
    assert j.wait_type("message", text="welcome")["ts"] == answer["ts"]
    server.admin("DELETE", f"/v1/channels/{channel}/members/{joiner.id}")
    m.wait_type("member_left_channel", user=joiner.id, channel=channel)
    seen = len(j.events)
    server.publish(channel, {"type": "message", "text": "after leaving", "user": member.id})
    m.wait_type("message", text="after leaving")
    j.assert_none(lambda e: e.get("text") == "after leaving", QUIET, after=seen)
