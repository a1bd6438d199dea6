#!/usr/bin/env python3
"""A live chat in the shape users deploy: the app answers requests and is
done; cometbox holds the browsers' connections.

- GET  /            the page (index.html), which subscribes with cometbox.js
- POST /say         {"room", "name", "text"}: publish the line to the room's
                    mailbox "room:<room>" through the gateway's Unix socket
- GET  /token?room= a subscriber token for that room, when the gateway
                    requires tokens (COMETBOX_JWT_SECRET_FILE set)

Only the standard library plus redis-py (and PyJWT when tokens are on).

    python3 app.py [--port 8000] [--gateway http://127.0.0.1:8080] [--socket /tmp/cometbox.sock]
"""
import argparse
import json
import os
import pathlib
import re
import sys
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import redis

HERE = pathlib.Path(__file__).resolve().parent
ROOM = re.compile(r"^[A-Za-z0-9._@-]{1,64}$")
MAX_LINE = 2000


class Chat:
    def __init__(self, gateway_url, socket_path, secret_file, token_ttl):
        self.gateway_url = gateway_url.rstrip("/")
        # One client for the process; redis-py pools the socket connections.
        self.cometbox = redis.Redis(unix_socket_path=socket_path)
        self.secret = None
        if secret_file:
            import jwt  # PyJWT: only needed when the gateway requires tokens

            self.jwt = jwt
            self.secret = pathlib.Path(secret_file).read_bytes().strip()
        self.token_ttl = token_ttl
        self.page = (HERE / "index.html").read_text()

    def render_page(self):
        config = {"gateway": self.gateway_url, "tokens": self.secret is not None}
        # The JSON goes inside a <script>: escape what could end it.
        blob = json.dumps(config).replace("<", "\\u003c")
        return self.page.replace("{{GATEWAY}}", self.gateway_url).replace("{{CONFIG}}", blob)

    def say(self, room, name, text):
        line = {"name": name, "text": text, "at": int(time.time() * 1000)}
        return self.cometbox.publish(f"room:{room}", json.dumps(line))

    def token(self, room):
        # In a real app: check here that the logged-in user may enter the room.
        now = int(time.time())
        claims = {"mailboxes": [f"room:{room}"], "exp": now + self.token_ttl, "nbf": now - 5}
        return self.jwt.encode(claims, self.secret, algorithm="HS256")


class Handler(BaseHTTPRequestHandler):
    chat: Chat
    server_version = "cometbox-chat/1"

    def do_GET(self):
        url = urlsplit(self.path)
        if url.path == "/":
            return self.send(HTTPStatus.OK, self.chat.render_page(), "text/html; charset=utf-8")
        if url.path == "/token" and self.chat.secret is not None:
            room = parse_qs(url.query).get("room", [""])[0]
            if not ROOM.match(room):
                return self.send(HTTPStatus.BAD_REQUEST, '{"error":"bad room"}')
            return self.send(HTTPStatus.OK, self.chat.token(room), "text/plain")
        self.send(HTTPStatus.NOT_FOUND, '{"error":"not found"}')

    def do_POST(self):
        if urlsplit(self.path).path != "/say":
            return self.send(HTTPStatus.NOT_FOUND, '{"error":"not found"}')
        try:
            length = int(self.headers.get("Content-Length", "0"))
            if not 0 < length <= 8192:
                raise ValueError("body size")
            body = json.loads(self.rfile.read(length))
            room, name, text = (str(body[k]).strip() for k in ("room", "name", "text"))
        except (ValueError, KeyError, TypeError):
            return self.send(HTTPStatus.BAD_REQUEST, '{"error":"expected JSON {room, name, text}"}')
        if not ROOM.match(room) or not name or not text or len(text) > MAX_LINE or len(name) > 40:
            return self.send(HTTPStatus.BAD_REQUEST, '{"error":"bad room, name or text"}')
        try:
            reached = self.chat.say(room, name, text)
        except redis.RedisError as e:
            self.log_error("publish failed: %s", e)
            return self.send(HTTPStatus.SERVICE_UNAVAILABLE, '{"error":"gateway unavailable"}')
        self.send(HTTPStatus.OK, json.dumps({"reached": reached}))

    def send(self, status, body, content_type="application/json"):
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, fmt, *args):
        if os.environ.get("CHAT_QUIET") != "1":
            super().log_message(fmt, *args)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bind", default="127.0.0.1")
    p.add_argument("--port", type=int, default=int(os.environ.get("CHAT_PORT", "8000")))
    p.add_argument("--gateway", default=os.environ.get("COMETBOX_URL", "http://127.0.0.1:8080"),
                   help="the gateway's URL as browsers reach it")
    p.add_argument("--socket", default=os.environ.get("COMETBOX_SOCKET", "/tmp/cometbox.sock"),
                   help="the gateway's backend socket")
    p.add_argument("--token-ttl", type=int, default=int(os.environ.get("TOKEN_TTL", "3600")))
    args = p.parse_args()
    Handler.chat = Chat(args.gateway, args.socket, os.environ.get("COMETBOX_JWT_SECRET_FILE"), args.token_ttl)
    server = ThreadingHTTPServer((args.bind, args.port), Handler)
    server.daemon_threads = True
    host, port = server.server_address[:2]
    print(f"chat app on http://{host}:{port} (gateway {args.gateway})", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
