"""What a Django app adds to push live updates through cometbox.

Not run by the tests (no Django here): the same calls as publish.py and
mint_token.py, in the shape a Django project pastes. Settings:

    COMETBOX_SOCKET = "/run/cometbox/backend.sock"
    COMETBOX_JWT_SECRET_FILE = "/etc/cometbox/jwt-secret"   # when auth is on
"""
import json
import time

import jwt
import redis
from django.conf import settings
from django.http import JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_POST

# Module level: one pool per process, reused by every request.
cometbox = redis.Redis(unix_socket_path=settings.COMETBOX_SOCKET)

with open(settings.COMETBOX_JWT_SECRET_FILE, "rb") as f:
    JWT_SECRET = f.read().strip()


@require_POST
def mark_order_shipped(request, order_id):
    order = request.user.orders.get(pk=order_id)
    order.ship()
    # The browser of the order's owner gets this on /mailbox/user:<id>.
    cometbox.publish(
        f"user:{order.owner_id}",
        json.dumps({"type": "order.shipped", "order": order.pk}),
    )
    return JsonResponse({"ok": True})


def dashboard(request):
    mailbox = f"user:{request.user.pk}"
    token = jwt.encode(
        {"mailboxes": [mailbox], "exp": int(time.time()) + 3600},
        JWT_SECRET,
        algorithm="HS256",
    )
    # The template builds the subscriber URL: see README.md.
    return render(request, "dashboard.html", {"mailbox": mailbox, "token": token})
