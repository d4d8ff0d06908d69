"""shipping — quotes a carrier, a delivery time and a price for an order. The shop's one service not
written in Node: Python 3.9+ standard library only, no Lockstep code in it. Its sidecar
(shipping-sidecar.ts, the `lockstep sidecar` of @lockstep/proxy) does the security: mTLS, the
Txn-Token, the Cedar decision (policies/shipping.cedar: only orders, for a signed-in customer), the
body's JSON Schema (shipping.sidecar.yaml) and the audit event. What it lets through arrives here
on a Unix socket, with the verified caller in `x-lockstep-*` headers, which this service only reads:
it has nothing to check.

    POST /quotes  {"item": "tea", "quantity": 2}  ->  201 {"carrier", "etaDays", "price", ...}
    GET /health   ->  200 {"ok": true}  (public)

A quote prices insurance from the item's catalogue price, which it asks inventory for through the
sidecar's egress (plain HTTP on another Unix socket; the sidecar calls inventory over mTLS with its own
SVID), forwarding the one header an app behind the sidecar must forward: the `txn-token` it was given.

Started by shipping-sidecar.ts (never by hand in the shop), configured by the environment:

    SHIPPING_LISTEN     unix:/absolute/path.sock (behind the sidecar) | 127.0.0.1:<port> (perimeter-only)
    SHIPPING_INVENTORY  the sidecar's egress, unix:/absolute/path.sock | http://127.0.0.1:<port> of inventory
                        itself (perimeter-only)
    SHIPPING_MODE       lockstep | perimeter-only (the drill's "before": whoever calls is believed, the
                        user comes from x-user, as the other services do in that mode)

It stops on SIGTERM or SIGINT, and when its standard input closes: its launcher is gone, and a
service nobody fronts must not keep running.
"""

from __future__ import annotations

import errno
import http.client
import json
import os
import signal
import socket
import socketserver
import stat
import sys
import threading
import uuid
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

SERVICE = "shipping"
MAX_BODY_BYTES = 16 * 1024
INVENTORY_TIMEOUT_S = 5


def log(level: str, message: str, **fields: object) -> None:
    """One JSON line on stderr, as the Node services write them (the launcher keeps them in logs/shipping.log)."""
    entry = {
        "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "level": level,
        "service": SERVICE,
        "runtime": "python",
        "message": message,
        **fields,
    }
    sys.stderr.write(json.dumps(entry, separators=(",", ":")) + "\n")
    sys.stderr.flush()


def required(name: str) -> str:
    value = os.environ.get(name, "")
    if value == "":
        log("error", f"{name} is not set: shipping.py is started by npm start (services/shipping-sidecar.ts)")
        sys.exit(2)
    return value


MODE = os.environ.get("SHIPPING_MODE", "lockstep")
if MODE not in ("lockstep", "perimeter-only"):
    log("error", f"SHIPPING_MODE must be lockstep or perimeter-only; got {MODE}")
    sys.exit(2)
LISTEN = required("SHIPPING_LISTEN")
INVENTORY = required("SHIPPING_INVENTORY")


class UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over a Unix socket (the sidecar's egress); http.client speaks it once connected."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.socket_path)


def inventory_connection() -> http.client.HTTPConnection:
    if INVENTORY.startswith("unix:"):
        return UnixHTTPConnection(INVENTORY[len("unix:"):], INVENTORY_TIMEOUT_S)
    url = urlsplit(INVENTORY)
    return http.client.HTTPConnection(url.hostname, url.port, timeout=INVENTORY_TIMEOUT_S)


class Refused(Exception):
    """Inventory did not give the catalogue: the quote cannot be priced. `reason` goes to the log only."""

    def __init__(self, status: int, error: str, reason: str = "", **detail: object) -> None:
        super().__init__(error)
        self.status = status
        self.reason = reason
        self.body = {"error": error, **detail}


def identity(headers) -> dict:
    """Who is asking, as the sidecar verified it; values are percent-encoded outside printable ASCII."""
    if MODE == "perimeter-only":
        # Nothing verified anything: the caller's word is all there is.
        return {"caller": None, "sub": headers.get("x-user", ""), "txn": None, "roles": [], "requestId": None}
    roles = headers.get("x-lockstep-roles", "")
    return {
        "caller": headers.get("x-lockstep-caller"),
        "sub": unquote(headers.get("x-lockstep-sub", "")),
        "txn": unquote(headers.get("x-lockstep-txn", "")) or None,
        "roles": [unquote(role) for role in roles.split(",") if role != ""],
        "requestId": headers.get("x-lockstep-request-id"),
    }


def catalogue_price(item: str, sub: str, headers) -> int:
    """The item's price at inventory (GET /items), through the egress with the Txn-Token forwarded."""
    outbound = {"accept": "application/json"}
    if MODE == "lockstep":
        outbound["lockstep-target"] = "inventory"
        # The one header to forward: without it inventory's guard (and the egress) refuses the call.
        outbound["txn-token"] = headers.get("txn-token", "")
    else:
        outbound["x-user"] = sub
    if headers.get("traceparent"):
        outbound["traceparent"] = headers["traceparent"]
    connection = inventory_connection()
    try:
        connection.request("GET", "/items", headers=outbound)
        response = connection.getresponse()
        text = response.read()
    except OSError as error:
        raise Refused(503, "INVENTORY_UNAVAILABLE", reason=str(error)) from error
    finally:
        connection.close()
    if response.status != 200:
        code = ""
        try:
            code = str(json.loads(text).get("error", ""))
        except (ValueError, AttributeError):
            pass
        raise Refused(502, "INVENTORY_REFUSED", status=response.status, code=code)
    try:
        prices = {entry["item"]: int(entry["price"]) for entry in json.loads(text)["items"]}
    except (ValueError, KeyError, TypeError) as error:
        raise Refused(502, "INVENTORY_ANSWER_INVALID", reason=str(error)) from error
    if item not in prices:
        raise Refused(422, "UNKNOWN_ITEM", item=item)
    return prices[item]


def quote(item: str, quantity: int, price: int) -> dict:
    """A parcel carrier for a few items, a freight one for more; insurance is 2 % of the goods."""
    if quantity >= 5:
        carrier, eta_days, base = "Freightline", 4, 790
    else:
        carrier, eta_days, base = "Parcelwise", 2, 390
    return {
        "quoteId": str(uuid.uuid4()),
        "item": item,
        "quantity": quantity,
        "carrier": carrier,
        "etaDays": eta_days,
        "price": base + 60 * quantity + (price * quantity * 2 + 99) // 100,  # whole cents, rounded up
    }


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 30  # a client that stops sending mid-request does not hold a thread for ever
    server_version = "shop-shipping"
    sys_version = ""

    def do_GET(self) -> None:
        if self.path_only() == "/health":
            return self.answer(200, {"ok": True})
        return self.answer(404, {"error": "NOT_FOUND"})

    do_HEAD = do_GET  # the sidecar passes HEAD for a GET route; answer() sends no body for it

    def do_POST(self) -> None:
        if self.path_only() != "/quotes":
            self.close_connection = True
            return self.answer(404, {"error": "NOT_FOUND"})
        body = self.json_body()
        if body is None:
            return None
        # The sidecar checked the body against its JSON Schema; in perimeter-only mode nothing did, so a
        # body this code cannot work with is a 400 (not a crash), whatever it holds besides.
        item, quantity = body.get("item"), body.get("quantity")
        if not isinstance(item, str) or not isinstance(quantity, int) or isinstance(quantity, bool):
            return self.answer(400, {"error": "INVALID_QUOTE_REQUEST"})
        who = identity(self.headers)
        try:
            answer = quote(item, quantity, catalogue_price(item, who["sub"], self.headers))
        except Refused as refused:
            log("warn", "no quote", **refused.body, reason=refused.reason, requestId=who["requestId"], txn=who["txn"])
            return self.answer(refused.status, {**refused.body, "requestId": who["requestId"]})
        # The caller and the user come from the sidecar's headers: logged and answered, never checked here.
        log("info", "quoted", quoteId=answer["quoteId"], caller=who["caller"], sub=who["sub"], txn=who["txn"],
            requestId=who["requestId"], carrier=answer["carrier"], price=answer["price"])
        return self.answer(201, {**answer, "quotedFor": who["sub"], "caller": who["caller"], "txn": who["txn"]})

    def path_only(self) -> str:
        # The sidecar refused paths it and this server could read differently (dot segments, %2F, //);
        # the query string is no part of the route.
        return urlsplit(self.path).path

    def json_body(self) -> dict | None:
        length = self.headers.get("content-length")
        if self.headers.get("transfer-encoding") is not None or length is None or not length.isdigit():
            self.close_connection = True
            self.answer(411, {"error": "LENGTH_REQUIRED"})
            return None
        if int(length) > MAX_BODY_BYTES:
            self.close_connection = True
            self.answer(413, {"error": "BODY_TOO_LARGE"})
            return None
        try:
            body = json.loads(self.rfile.read(int(length)))
        except ValueError:
            body = None
        if not isinstance(body, dict):
            self.answer(400, {"error": "INVALID_JSON"})
            return None
        return body

    def answer(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json; charset=utf-8")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def log_request(self, code: object = "-", size: object = "-") -> None:
        # Every request is audited by the sidecar (its decision, with the request id); no access log here.
        pass

    def log_error(self, format: str, *args: object) -> None:
        # What the HTTP layer refused by itself (a bad request line, a method this server does not serve).
        log("warn", format % args)


class UnixHTTPServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def get_request(self):
        connection, _ = super().get_request()
        # BaseHTTPRequestHandler names the client by address; a Unix socket peer has none.
        return connection, ("unix", 0)


def listen(where: str) -> socketserver.BaseServer:
    if where.startswith("unix:"):
        path = where[len("unix:"):]
        if os.path.lexists(path):
            if not stat.S_ISSOCK(os.lstat(path).st_mode):
                log("error", f"{path} exists and is no socket: move it away, shipping listens there")
                sys.exit(1)
            os.unlink(path)  # left by a run that was killed: its process is gone with its launcher
        # Only this user may connect: whatever arrives here is believed to come through the sidecar.
        os.umask(0o077)
        server = UnixHTTPServer(path, Handler)
        os.chmod(path, 0o600)
        return server
    host, _, port = where.rpartition(":")
    if host not in ("127.0.0.1", "localhost") or not port.isdigit():
        log("error", f"SHIPPING_LISTEN must be unix:/path or 127.0.0.1:<port>; got {where}")
        sys.exit(2)
    try:
        return ThreadingHTTPServer((host, int(port)), Handler)
    except OSError as error:
        if error.errno != errno.EADDRINUSE:
            raise
        log("error", f"port {port} on 127.0.0.1 is in use: stop what listens there, or choose other ports with "
            "LOCKSTEP_PORT_BASE (npm start uses six from there)")
        sys.exit(1)


def main() -> None:
    server = listen(LISTEN)

    def stop(*_: object) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    def watch_launcher() -> None:
        try:
            sys.stdin.buffer.read()
        except OSError:
            pass
        stop()

    threading.Thread(target=watch_launcher, daemon=True).start()
    socket_path = LISTEN[len("unix:"):] if LISTEN.startswith("unix:") else None
    bound = os.stat(socket_path).st_ino if socket_path is not None else None
    log("info", f"listening on {LISTEN} ({MODE}; inventory through {INVENTORY})")
    try:
        server.serve_forever(poll_interval=0.25)
    finally:
        server.server_close()
        # Only its own socket: a successor started meanwhile may listen on the same path already.
        try:
            if socket_path is not None and os.stat(socket_path).st_ino == bound:
                os.unlink(socket_path)
        except FileNotFoundError:
            pass
    log("info", "stopped")


if __name__ == "__main__":
    main()
