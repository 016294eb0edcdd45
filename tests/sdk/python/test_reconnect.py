"""Reconnection of the unmodified slack_sdk.rtm_v2.RTMClient.

What the SDK does (slack_sdk/rtm_v2/__init__.py, 3.47.0):
* on a ``goodbye`` event it asks for a new URL at once (rtm.connect), opens a
  new session and closes the old one itself;
* on a close frame it marks the session closed, and its session monitor
  (every ``ping_interval``) asks for a new URL and reconnects.

Triggers, none of which needs anything beyond the admin API:
* a server close: the server closes (4000, slow consumer) a connection whose
  outbound queue would pass ``--max-queue-bytes``; one transient event larger
  than the bound (4096, the minimum) does it at once, on a dedicated server;
* a goodbye: the admin API publishes any event type to a user's own channel,
  ``{"type":"goodbye"}`` included;
* drain (``POST /v1/drain``): the real goodbye-then-close (4001); the gateway
  then stops accepting, so only the attempt to reconnect can be observed.
"""

import pytest

from conftest import MODES, QUIET

QUEUE_BOUND = 4096


@pytest.mark.parametrize("mode", MODES)
def test_reconnects_after_server_close(new_server, rtm_clients, mode):
    server = new_server("small-queue server", ["--max-queue-bytes", str(QUEUE_BOUND)])
    bot = server.create_user(bot=True)
    channel = server.channel_with(bot)
    r = rtm_clients(server, bot, mode, ping_interval=1).connect()
    first_session = r.rtm.session_id()
    server.publish(bot.id, {"type": "transponder_test_oversize", "pad": "x" * (2 * QUEUE_BOUND)}, transient=True)
    code, _reason = r.wait_close()
    assert code == 4000, f"expected close 4000 (slow consumer), got {code}"
    # The SDK's monitor notices within a ping_interval and reconnects.
    r.wait(lambda e: e.get("type") == "hello", what="second hello", after=1)
    assert r.rtm.session_id() != first_session
    assert len(r.url_requests) == 2 and r.url_requests[0] != r.url_requests[1], r.url_requests
    seen = len(r.events)
    answer = server.publish(channel, {"type": "message", "text": "after reconnect", "user": bot.id})
    assert r.wait_type("message", text="after reconnect", after=seen)["ts"] == answer["ts"]


@pytest.mark.parametrize("mode", MODES)
def test_reconnects_on_goodbye(server, rtm_clients, mode):
    bot = server.create_user(bot=True)
    channel = server.channel_with(bot)
    r = rtm_clients(server, bot, mode, ping_interval=1).connect()
    first_session = r.rtm.session_id()
    server.publish(bot.id, {"type": "goodbye"}, transient=True)
    r.wait_type("goodbye")
    r.wait(lambda e: e.get("type") == "hello", what="hello after goodbye", after=1)
    assert r.rtm.session_id() != first_session
    assert len(r.url_requests) == 2, r.url_requests
    seen = len(r.events)
    server.publish(channel, {"type": "message", "text": "after goodbye", "user": bot.id})
    r.wait_type("message", text="after goodbye", after=seen)
    # The old session is gone: the event arrives once.
    r.assert_none(lambda e: e.get("text") == "after goodbye", QUIET, what="duplicate", after=len(r.events))
    assert sum(1 for e in r.events[seen:] if e.get("text") == "after goodbye") == 1


@pytest.mark.parametrize("mode", MODES)
def test_drain_says_goodbye_then_closes(new_server, rtm_clients, mode):
    server = new_server("drained server")
    bot = server.create_user(bot=True)
    r = rtm_clients(server, bot, mode, ping_interval=1).connect()
    server.admin("POST", "/v1/drain")
    r.wait_frame(lambda f: f.get("type") == "goodbye", what="goodbye")
    code, _reason = r.wait_close()
    assert code == 4001, f"expected close 4001 (drain), got {code}"
    # The SDK reacted to goodbye by asking for a new URL (whether the Web API
    # of a draining node still answers is not the point here).
    with r.cond:
        r.cond.wait_for(lambda: r.url_attempts >= 2, timeout=10)
    assert r.url_attempts >= 2, "the SDK did not try to reconnect after goodbye"
