"""What stands between the socket and the routes when clients are hostile or careless.

- `Guard` (pure ASGI middleware): the `Host` header must name this server, which stops DNS
  rebinding (a page on evil.example whose name now resolves to 127.0.0.1 sends `Host:
  evil.example`); POST bodies must be declared JSON, which a cross-site page can only do after a
  CORS preflight that this server answers only for `cors_origins`; and an exception a route lets
  out becomes a 500 in OpenAI's shape on a connection that stays open (Starlette's own handler
  re-raises it, and uvicorn then resets the keep-alive connection).
- `ReadTimeoutH11`: uvicorn's h11 protocol with a deadline on reading a request, so half-sent
  headers cannot hold a connection open (uvicorn has no header timeout). A body shorter than its
  Content-Length is timed out by `Server.read_body` with a 408; the protocol closes whatever is
  still unread a second later.
"""

from __future__ import annotations

import ipaddress
import json
import sys
import traceback

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from lmlab.serve.protocol import ApiError

WILDCARD = ("", "0.0.0.0", "::")


class Guard:
    def __init__(self, app, config):
        self.app, self.cfg = app, config
        self.names = {h.lower() for h in config.allowed_hosts}
        self.any_host = "*" in self.names

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k: v for k, v in scope["headers"]}
        error = self.check(scope["method"], headers)
        if error is not None:
            return await _send_error(send, error)
        started = [False]

        async def send_(msg):
            started[0] = started[0] or msg["type"] == "http.response.start"
            await send(msg)

        try:
            await self.app(scope, receive, send_)
        except Exception as e:
            if started[0]:
                raise  # a response half sent cannot be repaired: the connection must close
            traceback.print_exc(file=sys.stderr)
            await _send_error(send, ApiError(500, f"internal error: {type(e).__name__}: {e}", "server_error"))

    def check(self, method: str, headers: dict[bytes, bytes]) -> ApiError | None:
        host = headers.get(b"host")
        if host is not None and not self.host_ok(host.decode("latin-1")):
            return ApiError(421, f"Host {host.decode('latin-1')!r} does not name this server; reach it by "
                                 "localhost or its IP address, or start it with --allowed-hosts NAME",
                            code="misdirected_request")
        if method == "POST":
            kind = headers.get(b"content-type", b"").decode("latin-1").split(";")[0].strip().lower()
            if kind != "application/json" and not kind.endswith("+json"):
                return ApiError(415, f"Content-Type must be application/json, got {kind or 'none'!r}",
                                code="unsupported_media_type")
        return None

    def host_ok(self, host: str) -> bool:
        if self.any_host:
            return True
        name = host.lower()
        if name.startswith("["):  # [v6]:port
            name = name[1:name.find("]")] if "]" in name else name
        elif name.count(":") == 1:
            name = name.split(":")[0]
        if name in self.names or name == "localhost" or name.endswith(".localhost"):
            return True
        try:
            ip = ipaddress.ip_address(name)
        except ValueError:
            return False  # a name nobody configured: what DNS rebinding sends
        return ip.is_loopback or self.cfg.host in WILDCARD or name == self.cfg.host.lower().strip("[]")


async def _send_error(send, e: ApiError) -> None:
    body = json.dumps(e.body()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), str(v).encode()) for k, v in (e.headers or {}).items()]
    await send({"type": "http.response.start", "status": e.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class ReadTimeoutH11(H11Protocol):
    """A request must arrive within `read_timeout` seconds of its first byte (of the connection,
    for the first request); an idle connection between requests is uvicorn's keep-alive timeout."""
    read_timeout = 30.0
    _read_timer = None
    _grace = False

    @classmethod
    def with_timeout(cls, seconds: float) -> type:
        return type(cls.__name__, (cls,), {"read_timeout": float(seconds)})

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._watch()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch()

    def connection_lost(self, exc) -> None:
        self._unwatch()
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._unwatch()  # the next request's deadline starts with its first byte

    def _watch(self) -> None:
        state = self.conn.their_state
        if state is h11.SEND_BODY or (state is h11.IDLE and (self.conn.trailing_data[0] or self.cycle is None)):
            if self._read_timer is None:
                self._read_timer = self.loop.call_later(self.read_timeout, self._timed_out)
        else:
            self._unwatch()

    def _unwatch(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None
        self._grace = False

    def _timed_out(self) -> None:
        self._read_timer = None
        if self.transport.is_closing():
            return
        if self.conn.their_state is h11.SEND_BODY and self.cycle is not None and not self.cycle.response_started \
                and not self._grace:
            # The route reading the body answers 408 at its own deadline: give it a second.
            self._grace = True
            self._read_timer = self.loop.call_later(1.0, self._timed_out)
            return
        if self.conn.their_state is h11.IDLE and self.conn.trailing_data[0]:
            # Headers begun and never finished: no request exists yet, so answer on the raw socket.
            body = json.dumps(ApiError(408, f"request headers incomplete after {self.read_timeout:g} s",
                                       code="request_timeout").body()).encode()
            self.transport.write(b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
                                 b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
        self.transport.close()
