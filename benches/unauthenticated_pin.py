"""Benchmark (not a test): How much memory can unauthenticated clients pin on one shard?
Starts `transponder serve --shards 1`, opens N connections that each send an
attack payload and then hold, and reads the server's RSS before and after."""
import json, os, select, socket, subprocess, sys, tempfile, time

binary, kind, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
extra = sys.argv[4:]
data = tempfile.mkdtemp(prefix="pin-")
srv = subprocess.Popen([binary, "serve", "--shards", "1", "--gateway-port", "0", "--api-port", "0",
                        "--admin-port", "0", "--data-dir", data, "--admin-token", "secret"] + extra,
                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
ready = json.loads(srv.stdout.readline().split(" ", 1)[1])
def hp(url):
    hostport = url.split("//")[1].split("/")[0]
    h, p = hostport.split(":")
    return (h, int(p))
api, admin, gw = hp(ready["api"]), hp(ready["admin"]), hp(ready["gateway"])

def rss_kib():
    with open(f"/proc/{srv.pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])

MiB = 1 << 20
def payload(kind):
    if kind == "api-body-1m":      # tokenless Web API body, 1 MiB announced, all but 1 byte sent
        return api, b"POST /api/api.test HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 1048576\r\n\r\n" + b"a" * (MiB - 1)
    if kind == "admin-body-1m":    # admin body before the token check, wrong token
        return admin, b"POST /v1/users HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer wrong\r\nContent-Length: 1048576\r\n\r\n" + b"a" * (MiB - 1)
    if kind == "api-body-16k":     # the most a tokenless body may be now
        return api, b"POST /api/api.test HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 16384\r\n\r\n" + b"a" * 16383
    if kind == "api-head-64k":     # slowloris head, 64 KiB - 1, no end
        return api, b"GET /api/api.test HTTP/1.1\r\nX-Pad: " + b"a" * (64 * 1024 - 40)
    if kind == "api-head-16k":
        return api, b"GET /api/api.test HTTP/1.1\r\nX-Pad: " + b"a" * (16 * 1024 - 40)
    if kind == "api-idle":         # connect, send nothing
        return api, b""
    if kind == "gw-idle":
        return gw, b""
    if kind == "gw-head-8k":       # websocket upgrade request, 8 KiB - 1, no end
        return gw, b"GET /websocket/x HTTP/1.1\r\nX-Pad: " + b"a" * (8 * 1024 - 40)
    raise SystemExit(f"unknown kind {kind}")

try:
    addr, data_bytes = payload(kind)
except BaseException:
    srv.kill()
    raise
time.sleep(1.0)
base = rss_kib()
import atexit
atexit.register(lambda: (srv.kill(), srv.wait()))
socks, answered = [], 0
t0 = time.time()
for i in range(n):
    s = socket.create_connection(addr)
    s.settimeout(10)
    try:
        s.sendall(data_bytes)
    except OSError:
        answered += 1
        s.close()
        continue
    socks.append(s)
spent = time.time() - t0
time.sleep(float(os.environ.get("HOLD_SECS", "1.0")))
peak = rss_kib()
poller = select.poll()
for s in socks:
    poller.register(s, select.POLLIN)
answered += len(poller.poll(0))
print(json.dumps({"binary": os.path.basename(binary), "kind": kind, "connections": n,
                  "answered_or_refused": answered, "send_secs": round(spent, 1),
                  "rss_base_mib": round(base / 1024, 1), "rss_held_mib": round(peak / 1024, 1),
                  "pinned_mib": round((peak - base) / 1024, 1)}))
srv.kill(); srv.wait()
for s in socks: s.close()
