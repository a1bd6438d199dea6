#!/usr/bin/env python3
"""Mint a subscriber token (a JWT) with PyJWT, as the app does per page view.

    python3 mint_token.py MAILBOX...    # prints the token

HS256 with the secret the gateway reads from auth.jwt-secret-file: give the
same file as COMETBOX_JWT_SECRET_FILE. TOKEN_TTL sets the lifetime in seconds
(default 3600). A name ending in '*' grants a prefix ("room:*").
"""
import os
import sys
import time

import jwt  # PyJWT


def mint(mailboxes, secret, ttl=3600):
    now = int(time.time())
    claims = {"mailboxes": list(mailboxes), "exp": now + ttl, "nbf": now - 5}
    return jwt.encode(claims, secret, algorithm="HS256")


def main():
    if len(sys.argv) < 2 or "COMETBOX_JWT_SECRET_FILE" not in os.environ:
        sys.exit(__doc__)
    with open(os.environ["COMETBOX_JWT_SECRET_FILE"], "rb") as f:
        secret = f.read().strip()
    print(mint(sys.argv[1:], secret, int(os.environ.get("TOKEN_TTL", "3600"))))


if __name__ == "__main__":
    main()
