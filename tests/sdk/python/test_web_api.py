"""The Web API (``/api/<method>``) through the unmodified slack_sdk.WebClient,
with events observed by unmodified RTM clients that connect the SDK's own way
(auth.test, rtm.connect). Observers are bot users (see test_admin_rtm.py for
why RTMClient v2 needs a bot token)."""

import re
import time
import urllib.parse

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from conftest import QUIET, unique

TS = re.compile(r"^\d{10}\.\d{6}$")


def api_error(call, *args, **kwargs):
    """The error code of a call that must fail as Slack fails: HTTP 200,
    ``{"ok": false, "error": …}``, raised by the SDK as SlackApiError."""
    with pytest.raises(SlackApiError) as info:
        call(*args, **kwargs)
    response = info.value.response
    assert response.status_code == 200, f"application errors must be HTTP 200, got {response.status_code}"
    assert response["ok"] is False
    return response["error"]


def observer(server, rtm_clients, *channels):
    """A bot user in ``channels`` with a connected RTM client (rtm.connect)."""
    bot = server.create_user(bot=True)
    for c in channels:
        server.add_member(c, bot.id)
    return rtm_clients(server, bot, "rtm.connect").connect()


def history(web, channel, **kwargs):
    return web.conversations_history(channel=channel, **kwargs)


def ts_list(messages):
    return [m["ts"] for m in messages]


# ---------------------------------------------------------------------------
# Envelope, auth
# ---------------------------------------------------------------------------


def test_api_test_and_unknown_method(server):
    web = server.web(server.create_user())
    assert web.api_test()["ok"] is True
    assert api_error(web.api_call, "transponder.noSuchMethod") == "unknown_method"


def test_not_authed_and_invalid_auth(server):
    alice = server.create_user()
    assert api_error(WebClient(base_url=server.api).auth_test) == "not_authed"
    assert api_error(server.web("xoxp-not-a-real-token").auth_test) == "invalid_auth"
    tampered = alice.token[:-1] + ("0" if alice.token[-1] != "0" else "1")
    assert api_error(server.web(tampered).auth_test) == "invalid_auth"
    assert api_error(server.web(tampered).conversations_history, channel=server.create_channel()) == "invalid_auth"


def test_auth_test(server):
    alice = server.create_user()
    bot = server.create_user(bot=True)
    a = server.web(alice).auth_test()
    assert a["user_id"] == alice.id and a["user"] == alice.name
    assert a["team_id"].startswith("T") and a["team"] and a["url"]
    assert not a.get("bot_id"), "a user token has no bot_id"
    b = server.web(bot).auth_test()
    assert b["user_id"] == bot.id and b["team_id"] == a["team_id"]
    assert isinstance(b["bot_id"], str) and b["bot_id"].startswith("B"), b.data


def test_rtm_connect_answer(server):
    alice = server.create_user()
    web = server.web(alice)
    team_id = web.auth_test()["team_id"]
    for kwargs in ({}, {"batch_presence_aware": True, "presence_sub": True}):
        r = web.rtm_connect(**kwargs)
        url = urllib.parse.urlparse(r["url"])
        assert url.scheme == "ws" and url.hostname == "127.0.0.1", r["url"]
        assert url.path not in ("", "/"), "the SDK's websocket client needs a non-empty path"
        assert r["self"]["id"] == alice.id and r["self"]["name"] == alice.name
        assert r["team"]["id"] == team_id and "name" in r["team"] and "domain" in r["team"]


# ---------------------------------------------------------------------------
# chat.postMessage
# ---------------------------------------------------------------------------


def test_post_message_reaches_rtm_client(server, rtm_clients):
    alice = server.create_user()
    channel = server.create_channel()
    server.add_member(channel, alice.id)
    obs = observer(server, rtm_clients, channel)
    web = server.web(alice)
    team_id = web.auth_test()["team_id"]
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "*bold* hello"}}]
    # Python sends chat.postMessage as a JSON body, blocks as a JSON array.
    answer = web.chat_postMessage(channel=channel, text="hello rtm", blocks=blocks)
    assert answer["channel"] == channel and TS.match(answer["ts"]), answer.data
    m = answer["message"]
    assert m["type"] == "message" and m["user"] == alice.id and m["text"] == "hello rtm"
    assert m["ts"] == answer["ts"] and m["team"] == team_id
    ev = obs.wait_type("message", ts=answer["ts"])
    assert ev["channel"] == channel and ev["user"] == alice.id and ev["text"] == "hello rtm"
    assert ev["team"] == team_id and ev["event_ts"]
    assert ev["blocks"] == blocks
    # The channel may be named instead of identified.
    name = server.web(alice).conversations_info(channel=channel)["channel"]["name"]
    by_name = web.chat_postMessage(channel=name, text="by name")
    assert by_name["channel"] == channel
    assert obs.wait_type("message", text="by name")["ts"] == by_name["ts"]
    assert by_name["ts"] > answer["ts"]


def test_post_message_errors(server):
    alice = server.create_user()
    mine = server.channel_with(alice)
    other = server.create_channel()
    web = server.web(alice)
    assert api_error(web.chat_postMessage, channel="CNOSUCHCHAN", text="x") == "channel_not_found"
    assert api_error(web.chat_postMessage, channel="no-such-channel-name", text="x") == "channel_not_found"
    assert api_error(web.chat_postMessage, channel=other, text="x") == "not_in_channel"
    with pytest.warns(UserWarning, match="text"):  # the SDK warns, then sends it anyway
        assert api_error(web.chat_postMessage, channel=mine) == "no_text"


# ---------------------------------------------------------------------------
# conversations.history
# ---------------------------------------------------------------------------


def test_history_windows_and_pagination(server):
    alice = server.create_user()
    channel = server.channel_with(alice)
    web = server.web(alice)
    posted = []
    for i in range(250):
        posted.append(web.chat_postMessage(channel=channel, text=f"m{i:03}")["ts"])
    assert all(TS.match(t) for t in posted)
    # Fixed-width "<10 digits>.<6 digits>": string order is numeric order.
    assert all(a < b for a, b in zip(posted, posted[1:])), "ts must strictly increase"
    assert len(set(posted)) == 250
    newest_first = posted[::-1]

    # Cursor pagination, limit 100: 100, 100, 50; newest first; no gaps, no repeats.
    seen, cursor, pages = [], None, []
    while True:
        page = history(web, channel, limit=100, **({"cursor": cursor} if cursor else {}))
        pages.append(page)
        msgs = page["messages"]
        for m in msgs:
            assert m["type"] == "message" and m["user"] == alice.id
            assert m["text"] == f"m{posted.index(m['ts']):03}"
        seen += ts_list(msgs)
        cursor = page["response_metadata"]["next_cursor"]
        if not page["has_more"]:
            break
        assert cursor, "has_more without a next_cursor"
        assert len(pages) < 10, "pagination does not end"
    assert [len(p["messages"]) for p in pages] == [100, 100, 50]
    assert [p["has_more"] for p in pages] == [True, True, False]
    assert pages[-1]["response_metadata"]["next_cursor"] == ""
    assert seen == newest_first

    # The SDK's own pagination (iterating the response follows next_cursor).
    via_sdk = []
    for page in history(web, channel, limit=100):
        via_sdk += ts_list(page["messages"])
    assert via_sdk == newest_first

    t = posted
    # oldest/latest: exclusive by default, inclusive on request.
    assert ts_list(history(web, channel, oldest=t[10], latest=t[20])["messages"]) == t[11:20][::-1]
    r = history(web, channel, oldest=t[10], latest=t[20], inclusive=True)
    assert ts_list(r["messages"]) == t[10:21][::-1] and r["has_more"] is False
    r = history(web, channel, latest=t[5])
    assert ts_list(r["messages"]) == t[0:5][::-1] and r["has_more"] is False
    assert ts_list(history(web, channel, latest=t[5], inclusive=True)["messages"]) == t[0:6][::-1]
    r = history(web, channel, oldest=t[240])
    assert ts_list(r["messages"]) == t[241:][::-1] and r["has_more"] is False
    assert history(web, channel, oldest=t[249])["messages"] == []

    # A window paginates too: 192 messages in pages of 50.
    seen, cursor, sizes = [], None, []
    while True:
        page = history(web, channel, oldest=t[9], latest=t[200], inclusive=True, limit=50,
                       **({"cursor": cursor} if cursor else {}))
        sizes.append(len(page["messages"]))
        seen += ts_list(page["messages"])
        cursor = page["response_metadata"]["next_cursor"]
        if not page["has_more"]:
            assert cursor == ""
            break
        assert len(sizes) < 10
    assert sizes == [50, 50, 50, 42]
    assert seen == t[9:201][::-1]


# ---------------------------------------------------------------------------
# reactions
# ---------------------------------------------------------------------------


def test_reactions(server, rtm_clients):
    alice = server.create_user()
    bob = server.create_user()
    channel = server.channel_with(alice, bob)
    obs = observer(server, rtm_clients, channel)
    wa, wb = server.web(alice), server.web(bob)
    ts = wa.chat_postMessage(channel=channel, text="react to me")["ts"]

    def reactions():
        msgs = [m for m in history(wa, channel)["messages"] if m["ts"] == ts]
        assert len(msgs) == 1
        return msgs[0].get("reactions", [])

    wa.reactions_add(channel=channel, timestamp=ts, name="thumbsup")
    ev = obs.wait_type("reaction_added", user=alice.id)
    assert ev["reaction"] == "thumbsup" and ev["item_user"] == alice.id
    assert ev["item"] == {"type": "message", "channel": channel, "ts": ts}
    assert ev["event_ts"]
    wb.reactions_add(channel=channel, timestamp=ts, name="thumbsup")
    wb.reactions_add(channel=channel, timestamp=ts, name="eyes")
    obs.wait_type("reaction_added", user=bob.id, reaction="eyes")
    got = {r["name"]: r for r in reactions()}
    assert set(got) == {"thumbsup", "eyes"}
    assert sorted(got["thumbsup"]["users"]) == sorted([alice.id, bob.id]) and got["thumbsup"]["count"] == 2
    assert got["eyes"]["users"] == [bob.id] and got["eyes"]["count"] == 1

    assert api_error(wa.reactions_add, channel=channel, timestamp=ts, name="thumbsup") == "already_reacted"
    wa.reactions_remove(channel=channel, timestamp=ts, name="thumbsup")
    ev = obs.wait_type("reaction_removed", user=alice.id)
    assert ev["reaction"] == "thumbsup" and ev["item"] == {"type": "message", "channel": channel, "ts": ts}
    got = {r["name"]: r for r in reactions()}
    assert got["thumbsup"]["users"] == [bob.id] and got["thumbsup"]["count"] == 1
    assert api_error(wa.reactions_remove, channel=channel, timestamp=ts, name="thumbsup") == "no_reaction"
    wb.reactions_remove(channel=channel, timestamp=ts, name="thumbsup")
    wb.reactions_remove(channel=channel, timestamp=ts, name="eyes")
    assert reactions() == []

    missing = "1000000000.000001"
    assert api_error(wa.reactions_add, channel=channel, timestamp=missing, name="eyes") == "message_not_found"


# ---------------------------------------------------------------------------
# chat.update, chat.delete
# ---------------------------------------------------------------------------


def test_update(server, rtm_clients):
    alice = server.create_user()
    bob = server.create_user()
    channel = server.channel_with(alice, bob)
    obs = observer(server, rtm_clients, channel)
    wa = server.web(alice)
    ts = wa.chat_postMessage(channel=channel, text="before")["ts"]
    obs.wait_type("message", ts=ts)
    answer = wa.chat_update(channel=channel, ts=ts, text="after")
    assert answer["channel"] == channel and answer["ts"] == ts and answer["text"] == "after"
    ev = obs.wait(lambda e: e.get("subtype") == "message_changed", what="message_changed")
    assert ev["type"] == "message" and ev["hidden"] is True and ev["channel"] == channel
    assert ev["event_ts"] and ev["ts"]
    assert ev["message"]["ts"] == ts and ev["message"]["text"] == "after"
    assert ev["message"]["edited"]["user"] == alice.id and ev["message"]["edited"]["ts"]
    assert ev["previous_message"]["ts"] == ts and ev["previous_message"]["text"] == "before"
    msgs = [m for m in history(wa, channel)["messages"] if m["ts"] == ts]
    assert len(msgs) == 1 and msgs[0]["text"] == "after"

    assert api_error(wa.chat_update, channel=channel, ts="1000000000.000001", text="x") == "message_not_found"
    assert api_error(server.web(bob).chat_update, channel=channel, ts=ts, text="hijack") == "cant_update_message"


def test_delete(server, rtm_clients):
    alice = server.create_user()
    bob = server.create_user()
    channel = server.channel_with(alice, bob)
    obs = observer(server, rtm_clients, channel)
    wa = server.web(alice)
    keep = wa.chat_postMessage(channel=channel, text="keep")["ts"]
    ts = wa.chat_postMessage(channel=channel, text="doomed")["ts"]
    assert api_error(server.web(bob).chat_delete, channel=channel, ts=ts) == "cant_delete_message"
    answer = wa.chat_delete(channel=channel, ts=ts)
    assert answer["channel"] == channel and answer["ts"] == ts
    ev = obs.wait(lambda e: e.get("subtype") == "message_deleted", what="message_deleted")
    assert ev["type"] == "message" and ev["hidden"] is True and ev["channel"] == channel
    assert ev["deleted_ts"] == ts and ev["event_ts"]
    assert ev["previous_message"]["text"] == "doomed"
    assert ts_list(history(wa, channel)["messages"]) == [keep]
    assert api_error(wa.chat_delete, channel=channel, ts=ts) == "message_not_found"


# ---------------------------------------------------------------------------
# threads
# ---------------------------------------------------------------------------


def test_thread_replies(server, rtm_clients):
    alice = server.create_user()
    bob = server.create_user()
    channel = server.channel_with(alice, bob)
    obs = observer(server, rtm_clients, channel)
    wa, wb = server.web(alice), server.web(bob)
    parent = wa.chat_postMessage(channel=channel, text="parent")["ts"]
    replies = []
    for web, text in ((wb, "r1"), (wa, "r2"), (wb, "r3")):
        a = web.chat_postMessage(channel=channel, text=text, thread_ts=parent)
        assert a["message"]["thread_ts"] == parent
        replies.append(a["ts"])
    ev = obs.wait_type("message", ts=replies[-1])
    assert ev["thread_ts"] == parent and ev["text"] == "r3"

    r = wa.conversations_replies(channel=channel, ts=parent)
    msgs = r["messages"]
    assert ts_list(msgs) == [parent] + replies, "parent first, then replies oldest first"
    head = msgs[0]
    assert head["text"] == "parent" and head["thread_ts"] == parent
    assert head["reply_count"] == 3
    assert sorted(head["reply_users"]) == sorted([alice.id, bob.id])
    assert head["latest_reply"] == replies[-1]
    assert [m["text"] for m in msgs[1:]] == ["r1", "r2", "r3"]
    assert all(m["thread_ts"] == parent for m in msgs[1:])
    assert r["has_more"] is False

    # Pagination of replies: the parent leads the first page; every reply
    # comes once, in order (whether later pages repeat the parent is left open).
    p1 = wa.conversations_replies(channel=channel, ts=parent, limit=2)
    assert ts_list(p1["messages"])[0] == parent and p1["has_more"] is True
    got, cursor = ts_list(p1["messages"]), p1["response_metadata"]["next_cursor"]
    while cursor:
        p = wa.conversations_replies(channel=channel, ts=parent, limit=2, cursor=cursor)
        got += ts_list(p["messages"])
        cursor = p["response_metadata"]["next_cursor"]
        assert len(got) < 20
    assert [t for t in got if t != parent] == replies

    in_history = [m for m in history(wa, channel)["messages"] if m["ts"] == parent]
    assert len(in_history) == 1 and in_history[0]["reply_count"] == 3
    assert in_history[0]["latest_reply"] == replies[-1]
    assert api_error(wa.conversations_replies, channel=channel, ts="1000000000.000001") == "thread_not_found"


# ---------------------------------------------------------------------------
# presence
# ---------------------------------------------------------------------------


def test_presence(server, rtm_clients):
    alice = server.create_user()
    watcher = observer(server, rtm_clients)
    xbot = server.create_user(bot=True)
    x = rtm_clients(server, xbot, "rtm.connect").connect()
    watcher.send({"type": "presence_sub", "ids": [xbot.id]})
    watcher.wait_type("presence_change", user=xbot.id, presence="active")
    wa, wx = server.web(alice), server.web(xbot)
    assert wa.users_getPresence(user=xbot.id)["presence"] == "active"

    seen = len(watcher.events)
    wx.users_setPresence(presence="away")
    watcher.wait_type("presence_change", user=xbot.id, presence="away", after=seen)
    assert wa.users_getPresence(user=xbot.id)["presence"] == "away"
    me = wx.users_getPresence(user=xbot.id)
    assert me["presence"] == "away" and me["manual_away"] is True and me["online"] is True
    assert me["auto_away"] is False and me["connection_count"] == 1 and "last_activity" in me

    seen = len(watcher.events)
    wx.users_setPresence(presence="auto")
    watcher.wait_type("presence_change", user=xbot.id, presence="active", after=seen)
    me = wx.users_getPresence(user=xbot.id)
    assert me["presence"] == "active" and me["manual_away"] is False and me["online"] is True

    seen = len(watcher.events)
    x.close()
    watcher.wait_type("presence_change", user=xbot.id, presence="away", after=seen)
    assert wa.users_getPresence(user=xbot.id)["presence"] == "away"
    assert api_error(wx.users_setPresence, presence="busy") == "invalid_presence"


# ---------------------------------------------------------------------------
# RTM and Web API see the same messages
# ---------------------------------------------------------------------------


def test_rtm_message_is_in_history(server, rtm_clients):
    bot = server.create_user(bot=True)
    alice = server.create_user()
    channel = server.channel_with(bot, alice)
    r = rtm_clients(server, bot, "rtm.connect").connect()
    r.send({"id": 5, "type": "message", "channel": channel, "text": "typed live"})
    reply = r.wait_frame(lambda f: f.get("reply_to") == 5, what="reply")
    assert reply["ok"] is True
    msgs = history(server.web(alice), channel)["messages"]
    assert [(m["ts"], m["text"], m["user"]) for m in msgs] == [(reply["ts"], "typed live", bot.id)]


# ---------------------------------------------------------------------------
# conversations.*, users.*
# ---------------------------------------------------------------------------


def test_conversations_lifecycle(server, rtm_clients):
    alice = server.create_user()
    bob = server.create_user()
    carol = server.create_user()
    watcher = observer(server, rtm_clients)
    wa, wb = server.web(alice), server.web(bob)
    name = unique("conv")
    created = wa.conversations_create(name=name)["channel"]
    channel = created["id"]
    for field in ("id", "name", "is_channel", "is_group", "is_im", "is_private", "is_archived",
                  "is_general", "created", "creator", "is_member", "topic", "purpose"):
        assert field in created, f"channel object lacks {field}: {created}"
    assert created["name"] == name and created["creator"] == alice.id and created["is_member"] is True
    assert created["is_channel"] is True and created["is_private"] is False and created["is_im"] is False
    ev = watcher.wait(lambda e: e.get("type") == "channel_created" and e["channel"]["id"] == channel,
                      what="channel_created")
    assert ev["channel"]["name"] == name and ev["channel"]["creator"] == alice.id
    assert api_error(wa.conversations_create, name=name) == "name_taken"

    info = wa.conversations_info(channel=channel, include_num_members=True)["channel"]
    assert info["id"] == channel and info["name"] == name and info["num_members"] == 1
    assert api_error(wa.conversations_info, channel="CNOSUCHCHAN") == "channel_not_found"

    wa.conversations_invite(channel=channel, users=f"{bob.id},{carol.id}")
    assert api_error(wa.conversations_invite, channel=channel, users=bob.id) == "already_in_channel"
    assert api_error(wa.conversations_invite, channel=channel, users="UNOSUCHUSER") == "user_not_found"
    assert api_error(wa.conversations_invite, channel=channel, users=alice.id) == "cant_invite_self"
    members = []
    for page in wa.conversations_members(channel=channel, limit=2):
        members += page["members"]
    assert sorted(members) == sorted([alice.id, bob.id, carol.id])

    wb.chat_postMessage(channel=channel, text="bob was here")
    wb.conversations_leave(channel=channel)
    assert api_error(wb.conversations_leave, channel=channel) == "not_in_channel"
    assert api_error(wb.chat_postMessage, channel=channel, text="x") == "not_in_channel"
    joined = wb.conversations_join(channel=channel)
    assert joined["channel"]["id"] == channel
    again = wb.conversations_join(channel=channel)
    assert again["channel"]["id"] == channel and again.get("warning") == "already_in_channel"

    listed = []
    for page in wa.conversations_list(limit=50):
        listed += [c["id"] for c in page["channels"]]
    assert channel in listed and len(listed) == len(set(listed))


def test_users_info_and_list(server):
    alice = server.create_user()
    bot = server.create_user(bot=True)
    wa = server.web(alice)
    team_id = wa.auth_test()["team_id"]
    u = wa.users_info(user=alice.id)["user"]
    assert u["id"] == alice.id and u["name"] == alice.name and u["team_id"] == team_id
    assert u["deleted"] is False and u["is_bot"] is False and isinstance(u["profile"], dict)
    assert "real_name" in u and "tz" in u
    assert wa.users_info(user=bot.id)["user"]["is_bot"] is True
    assert api_error(wa.users_info, user="UNOSUCHUSER") == "user_not_found"
    ids = []
    for page in wa.users_list(limit=3):
        ids += [m["id"] for m in page["members"]]
        assert len(ids) < 10000
    assert alice.id in ids and bot.id in ids and len(ids) == len(set(ids))


# ---------------------------------------------------------------------------
# Scheduled messages
# ---------------------------------------------------------------------------


def test_scheduled_messages(server, rtm_clients):
    alice = server.create_user()
    channel = server.channel_with(alice)
    obs = observer(server, rtm_clients, channel)
    web = server.web(alice)
    post_at = int(time.time()) + 3
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "*later*"}}]
    # Python sends chat.scheduleMessage as a JSON body; post_at as an int
    # here, as a string below (the SDK takes either).
    answer = web.chat_scheduleMessage(channel=channel, post_at=post_at, text="later", blocks=blocks)
    assert answer["channel"] == channel and answer["post_at"] == post_at, answer.data
    later_id = answer["scheduled_message_id"]
    assert re.match(r"^Q\d{10}$", later_id), later_id
    assert answer["message"]["type"] == "delayed_message" and answer["message"]["text"] == "later"
    doomed = web.chat_scheduleMessage(channel=channel, post_at=str(post_at), text="doomed")
    extra = [
        web.chat_scheduleMessage(channel=channel, post_at=post_at + 3600 + i, text=f"x{i}")["scheduled_message_id"]
        for i in range(3)
    ]

    # chat.scheduledMessages.list goes as form parameters; pages by cursor.
    listed = web.chat_scheduledMessages_list(channel=channel)
    items = listed["scheduled_messages"]
    assert [m["id"] for m in items] == [later_id, doomed["scheduled_message_id"], *extra]
    first = items[0]
    assert first["channel_id"] == channel and first["post_at"] == post_at and first["text"] == "later"
    assert first["date_created"] <= post_at
    paged = []
    for page in web.chat_scheduledMessages_list(limit=2):
        paged += [m["id"] for m in page["scheduled_messages"]]
    assert paged == [m["id"] for m in items]
    window = web.chat_scheduledMessages_list(oldest=str(post_at + 3600), latest=str(post_at + 3601))
    assert [m["text"] for m in window["scheduled_messages"]] == ["x0", "x1"]

    assert web.chat_deleteScheduledMessage(channel=channel, scheduled_message_id=doomed["scheduled_message_id"])["ok"]
    gone = api_error(
        web.chat_deleteScheduledMessage, channel=channel, scheduled_message_id=doomed["scheduled_message_id"]
    )
    assert gone == "invalid_scheduled_message_id"
    for i in extra:
        web.chat_deleteScheduledMessage(channel=channel, scheduled_message_id=i)

    ev = obs.wait_type("message", timeout=30, text="later")
    assert time.time() >= post_at
    assert ev["channel"] == channel and ev["user"] == alice.id and ev["blocks"] == blocks
    assert float(ev["ts"]) >= post_at
    assert [m["text"] for m in history(web, channel)["messages"]] == ["later"]
    assert web.chat_scheduledMessages_list()["scheduled_messages"] == []

    assert api_error(web.chat_scheduleMessage, channel=channel, post_at=post_at - 3600, text="x") == "time_in_past"
    too_far = post_at + 121 * 86400
    assert api_error(web.chat_scheduleMessage, channel=channel, post_at=too_far, text="x") == "time_too_far"
    assert api_error(web.chat_scheduleMessage, channel="CNOSUCHCHAN", post_at=post_at, text="x") == "channel_not_found"
    other = server.create_channel()
    assert api_error(web.chat_scheduleMessage, channel=other, post_at=post_at + 60, text="x") == "not_in_channel"
    bad_id = api_error(web.chat_deleteScheduledMessage, channel=channel, scheduled_message_id="Q0000000000")
    assert bad_id == "invalid_scheduled_message_id"
