"""Harness of the Python SDK conformance tests.

The official ``slack_sdk`` (WebClient and rtm_v2.RTMClient), unmodified, is
pointed at a real Transponder binary; only the base URL changes.

* ``Server``: starts ``transponder serve`` on ephemeral 127.0.0.1 ports with a
  fresh data directory and a random admin token, reads its single ``ready``
  line, provisions through the admin API, and kills the server at the end.
  When the run fails, the tail of every server's stderr is printed.
* ``Rtm``: one ``slack_sdk.rtm_v2.RTMClient`` and everything it received. It
  gets its websocket URL either the SDK's own way (``mode="rtm.connect"``: the
  client calls auth.test and rtm.connect on the Web API) or from the admin API
  (``mode="ticket"``: a WebClient subclass whose ``rtm_connect`` returns a
  URL from ``POST /v1/tickets``; the RTM client itself is untouched). The
  RTMClient accepts any ``web_client``; this is its documented parameter.

Every wait is bounded; every network target is 127.0.0.1.
"""

import itertools
import json
import os
import queue
import secrets
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

# A missing dependency must fail the run loudly, never skip: plain imports.
import slack_sdk  # noqa: F401
from slack_sdk import WebClient
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler
from slack_sdk.rtm_v2 import RTMClient

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_BIN = os.path.normpath(os.path.join(HERE, "..", "..", "..", "target", "debug", "transponder"))

READY_TIMEOUT = 30.0
EVENT_TIMEOUT = 10.0
# How long we listen to conclude that something does not arrive.
QUIET = 0.6

# Nothing may go through a proxy: every target is on this machine. The SDK
# reads these variables (slack_sdk.proxy_env_variable_loader).
for _var in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
    os.environ.pop(_var, None)
os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"

_counter = itertools.count()


def unique(prefix):
    """A short name unique in this run (channel names: [a-z0-9_-], at most 80)."""
    return f"{prefix}-{os.getpid()}-{next(_counter)}-{secrets.token_hex(3)}"


def _check_loopback(url, schemes):
    parsed = urllib.parse.urlparse(url)
    assert parsed.scheme in schemes, f"{url!r}: scheme not in {schemes}"
    assert parsed.hostname == "127.0.0.1", f"{url!r} is not on 127.0.0.1"
    return parsed


class User:
    def __init__(self, id, name, token, bot):
        self.id, self.name, self.token, self.bot = id, name, token, bot

    def __repr__(self):
        return f"User({self.id}, {self.name}, bot={self.bot})"


# Server logs kept for the failure report (label, stderr tail).
_SERVER_LOGS = []


class Server:
    """The real binary on ephemeral ports."""

    def __init__(self, label, extra_args=()):
        self.label = label
        self.extra_args = list(extra_args)
        self.proc = None
        self.dir = None
        self.stderr_path = None

    # -- lifecycle ---------------------------------------------------------

    def start(self):
        binary = os.environ.get("TRANSPONDER_BIN", DEFAULT_BIN)
        if not os.path.isfile(binary) or not os.access(binary, os.X_OK):
            raise RuntimeError(
                f"transponder binary not found at {binary!r}: run `cargo build` in the "
                "repository root or set TRANSPONDER_BIN"
            )
        self.dir = tempfile.mkdtemp(prefix="transponder-sdk-py-")
        self.admin_token = secrets.token_hex(16)
        self.stderr_path = os.path.join(self.dir, "stderr.log")
        data_dir = os.path.join(self.dir, "data")
        os.mkdir(data_dir)
        args = [
            binary, "serve",
            "--shards", "2",
            "--gateway-port", "0",
            "--api-port", "0",
            "--admin-port", "0",
            "--data-dir", data_dir,
            "--admin-token", self.admin_token,
            *self.extra_args,
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith("TRANSPONDER_")}
        env["TRANSPONDER_HOST"] = "127.0.0.1"
        self._stderr = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self._stderr, env=env
        )
        lines = queue.Queue()

        def read_stdout():
            for line in self.proc.stdout:
                lines.put(line.decode("utf-8", "replace"))
            lines.put(None)

        threading.Thread(target=read_stdout, daemon=True).start()
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self.stop()
                raise RuntimeError(f"{self.label}: no ready line within {READY_TIMEOUT}s\n{self.stderr_tail()}")
            if line is None:
                code = self.proc.wait()
                self.stop()
                raise RuntimeError(f"{self.label}: server exited with {code} before ready\n{self.stderr_tail()}")
            if line.startswith("ready "):
                break
        ready = json.loads(line[len("ready "):])
        self.gateway = ready["gateway"]
        self.api = ready["api"]
        self.admin_url = ready["admin"]
        _check_loopback(self.gateway, ("ws",))
        _check_loopback(self.api, ("http",))
        _check_loopback(self.admin_url, ("http",))
        assert self.api.endswith("/api/"), f"api base URL {self.api!r} must end with /api/"
        assert ready["admin_token"] == self.admin_token
        return self

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self.stderr_path is not None:
            _SERVER_LOGS.append((self.label, self.stderr_tail()))
        if getattr(self, "_stderr", None) is not None:
            self._stderr.close()
            self._stderr = None
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def stderr_tail(self, lines=60):
        try:
            with open(self.stderr_path, "rb") as f:
                text = f.read().decode("utf-8", "replace")
        except OSError:
            return "(no stderr)"
        tail = text.splitlines()[-lines:]
        return f"--- {self.label}: last {len(tail)} lines of stderr ---\n" + "\n".join(tail)

    # -- admin API ---------------------------------------------------------

    def admin(self, method, path, body=None, expect_ok=True):
        """One admin API call; returns (status, json)."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.admin_url + path.lstrip("/"),
            data=data,
            method=method,
            headers={"Authorization": f"Bearer {self.admin_token}", "Content-Type": "application/json"},
        )
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(req, timeout=30) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as e:
            status, raw = e.code, e.read()
        answer = json.loads(raw) if raw else {}
        if expect_ok:
            assert status == 200 and answer.get("ok") is True, f"admin {method} {path} {body}: {status} {answer}"
        return status, answer

    def create_user(self, name=None, bot=False):
        name = name or unique("bot" if bot else "user")
        _, a = self.admin("POST", "/v1/users", {"name": name, "bot": bot})
        token = a["token"]
        assert token.startswith("xoxb-" if bot else "xoxp-"), a
        assert a["user"]["id"].startswith("U"), a
        return User(a["user"]["id"], name, token, bot)

    def create_channel(self, name=None, private=False):
        _, a = self.admin("POST", "/v1/channels", {"name": name or unique("ch"), "private": private})
        return a["channel"]["id"]

    def add_member(self, channel, user_id):
        self.admin("POST", f"/v1/channels/{channel}/members", {"user": user_id})

    def channel_with(self, *users):
        """A fresh public channel whose members are ``users``."""
        channel = self.create_channel()
        for u in users:
            self.add_member(channel, u.id)
        return channel

    def ticket(self, user_id):
        _, a = self.admin("POST", "/v1/tickets", {"user": user_id})
        _check_loopback(a["url"], ("ws",))
        return a["url"]

    def publish(self, channel, event, transient=False):
        _, a = self.admin("POST", "/v1/publish", {"channel": channel, "event": event, "transient": transient})
        return a

    def presence(self, *user_ids):
        _, a = self.admin("GET", "/v1/presence?users=" + ",".join(user_ids))
        return a["presence"]

    # -- SDK clients -------------------------------------------------------

    def web(self, user_or_token):
        """A WebClient for a user (or a raw token). Besides the SDK's default
        retry handler (connection errors) it gets the SDK's own handler for
        HTTP 429, which sleeps Retry-After: a test that posts hundreds of
        messages with one token stays within the rules whatever the limits."""
        token = user_or_token.token if isinstance(user_or_token, User) else user_or_token
        web = WebClient(token=token, base_url=self.api, timeout=30)
        web.retry_handlers.append(RateLimitErrorRetryHandler(max_retry_count=3))
        return web


# Stands in for auth.test's bot_id in ticket mode (the admin API does not
# tell it). RTMClient v2 drops every event whose bot_id equals its own, so
# this must be a value no event carries.
TICKET_MODE_BOT_ID = "B0TICKETMODE"


class TicketWebClient(WebClient):
    """A WebClient whose rtm.connect is an admin-issued ticket and whose
    auth.test is answered locally: lets the unmodified RTMClient run while
    the Web API is absent. Every other method is the real one."""

    def __init__(self, server, user):
        super().__init__(token=user.token, base_url=server.api, timeout=30)
        self._server, self._user = server, user

    def auth_test(self, **kwargs):
        return {"ok": True, "user_id": self._user.id, "user": self._user.name,
                "bot_id": TICKET_MODE_BOT_ID if self._user.bot else None}

    def rtm_connect(self, **kwargs):
        return {"ok": True, "url": self._server.ticket(self._user.id),
                "self": {"id": self._user.id, "name": self._user.name}}


MODES = ["ticket", "rtm.connect"]


class Rtm:
    """One unmodified ``slack_sdk.rtm_v2.RTMClient`` and what it received.

    ``events``: what the SDK dispatched to an ``@rtm.on("*")`` listener, in
    order (``concurrency=1``: one worker, FIFO). ``frames``: every text frame
    as the SDK's raw ``on_message_listeners`` saw it, in receive order.
    ``closes``: (code, reason) of every close frame from the server.
    ``url_requests``: every websocket URL the client obtained (rtm.connect);
    ``url_attempts``: how many times it asked, answered or not.
    """

    def __init__(self, server, user, mode, ping_interval=1):
        assert mode in MODES, mode
        self.server, self.user, self.mode = server, user, mode
        self.cond = threading.Condition()
        self.events, self.frames, self.closes, self.url_requests = [], [], [], []
        self.url_attempts = 0
        kwargs = dict(
            token=user.token,
            base_url=server.api,
            ping_interval=ping_interval,
            concurrency=1,
            timeout=30,
            on_message_listeners=[self._on_frame],
            on_close_listeners=[self._on_close],
        )
        if mode == "ticket":
            kwargs["web_client"] = TicketWebClient(server, user)
        self.rtm = RTMClient(**kwargs)
        # Observe (without changing) every URL request the SDK makes.
        sdk_rtm_connect = self.rtm.web_client.rtm_connect

        def observed_rtm_connect(**kw):
            with self.cond:
                self.url_attempts += 1
                self.cond.notify_all()
            answer = sdk_rtm_connect(**kw)
            with self.cond:
                self.url_requests.append(answer["url"])
                self.cond.notify_all()
            return answer

        self.rtm.web_client.rtm_connect = observed_rtm_connect

        @self.rtm.on("*")
        def on_any(client, event):
            with self.cond:
                self.events.append(event)
                self.cond.notify_all()

    def _on_frame(self, text):
        try:
            frame = json.loads(text)
        except ValueError:
            frame = {"type": "<not JSON>", "raw": text}  # fails any test that looks at it
        with self.cond:
            self.frames.append(frame)
            self.cond.notify_all()

    def _on_close(self, code, reason):
        with self.cond:
            self.closes.append((code, reason))
            self.cond.notify_all()

    # -- connection --------------------------------------------------------

    def connect(self):
        """The SDK's own connect (auth.test, rtm.connect, handshake), then
        waits for ``hello``."""
        hellos = self.count("hello")
        self.rtm.connect()
        self.wait(lambda e: e.get("type") == "hello", what="hello", after=hellos)
        assert self.rtm.is_connected()
        return self

    def count(self, type_):
        with self.cond:
            return sum(1 for e in self.events if e.get("type") == type_)

    def close(self):
        """Stops the client for good. RTMClient.close() alone does not: its
        session monitor reconnects a closed session while auto-reconnect is
        on, so that goes first."""
        rtm = self.rtm
        rtm.auto_reconnect_enabled = False
        rtm.default_auto_reconnect_enabled = False
        rtm.closed = True
        for runner in (rtm.current_app_monitor, rtm.current_session_runner, rtm.message_processor):
            runner.event.set()
        session = rtm.current_session
        if session is not None:
            rtm.current_session_state.terminated = True
            # Wake the SDK's receiving thread (it holds the receive lock for
            # up to 3 s in recv) so that disconnect() need not wait for it.
            sock = session.sock
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            session.close()
        rtm.message_workers.shutdown(wait=False)

    def send(self, payload):
        self.rtm.send(payload)

    # -- waiting -----------------------------------------------------------

    def _wait_in(self, items, pred, timeout, what, after):
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for e in items[after:]:
                    if pred(e):
                        return e
                left = deadline - time.monotonic()
                if left <= 0:
                    got = [json.dumps(e)[:200] for e in items[-15:]]
                    raise AssertionError(
                        f"{self.user.name} ({self.mode}): no {what} within {timeout}s; "
                        f"last received:\n  " + "\n  ".join(got)
                    )
                self.cond.wait(left)

    def wait(self, pred, timeout=EVENT_TIMEOUT, what="matching event", after=0):
        """The first dispatched event (from index ``after``) matching ``pred``."""
        return self._wait_in(self.events, pred, timeout, what, after)

    def wait_frame(self, pred, timeout=EVENT_TIMEOUT, what="matching frame", after=0):
        """The first raw frame (from index ``after``) matching ``pred``."""
        return self._wait_in(self.frames, pred, timeout, what, after)

    def wait_type(self, type_, timeout=EVENT_TIMEOUT, after=0, **fields):
        def pred(e):
            return e.get("type") == type_ and all(e.get(k) == v for k, v in fields.items())

        return self.wait(pred, timeout, what=f"{type_} {fields}", after=after)

    def wait_close(self, timeout=EVENT_TIMEOUT):
        deadline = time.monotonic() + timeout
        with self.cond:
            while not self.closes:
                left = deadline - time.monotonic()
                assert left > 0, f"{self.user.name}: no close frame within {timeout}s"
                self.cond.wait(left)
            return self.closes[0]

    def assert_none(self, pred, seconds=QUIET, what="event", after=0):
        time.sleep(seconds)
        with self.cond:
            bad = [e for e in self.events[after:] if pred(e)]
        assert not bad, f"{self.user.name}: unexpected {what}: {bad}"


# ---------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def server():
    """One server for the whole run (tests provision their own users and channels)."""
    s = Server("session server").start()
    yield s
    s.stop()


@pytest.fixture
def new_server():
    """Starts dedicated servers (``new_server(label, extra_args)``), stopped after the test."""
    started = []

    def start(label, extra_args=()):
        s = Server(label, extra_args).start()
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


@pytest.fixture
def rtm_clients():
    """``rtm_clients(server, user, mode)`` makes an unconnected ``Rtm``; all are
    closed after the test."""
    made = []

    def make(server, user, mode, **kwargs):
        r = Rtm(server, user, mode, **kwargs)
        made.append(r)
        return r

    yield make
    for r in made:
        try:
            r.close()
        except Exception as e:  # teardown must close the others too
            print(f"closing RTM client of {r.user}: {e!r}")


# ---------------------------------------------------------------------------
# Reporting: server stderr on failure; skips are failures.
# ---------------------------------------------------------------------------

_skipped = []


def pytest_runtest_logreport(report):
    if report.skipped:
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session, exitstatus):
    if _skipped and session.exitstatus == 0:
        session.exitstatus = 1


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if _skipped:
        terminalreporter.write_line(
            "SKIPPED TESTS FAIL THIS SUITE (nothing may skip silently): " + ", ".join(_skipped), red=True
        )
    if exitstatus != 0 or _skipped:
        for label, tail in _SERVER_LOGS:
            terminalreporter.write_line(tail)
