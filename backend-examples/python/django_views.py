"""What a Django app adds to push live updates through cometbox.

Not run by the tests (it needs a Django project): the same calls as
publish.py and mint_token.py, in the shape a Django project pastes. Settings:

    COMETBOX_SOCKET = "/run/cometbox/cometbox.sock"
    COMETBOX_JWT_SECRET_FILE = "/etc/cometbox/jwt-secret"   # when auth is on
"""
import json
import logging
import time

import jwt
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from django.conf import settings
from django.db import transaction
from django.http import JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_POST

log = logging.getLogger(__name__)

# Module level: one pool per process, reused by every request. A gateway
# that is down or stuck must cost a request half a second at most: short
# timeouts, and no retries (redis-py 6 and later retry 3 times with backoff
# by default, which makes a stuck gateway cost a request 10 s).
cometbox = redis.Redis(
    unix_socket_path=settings.COMETBOX_SOCKET,
    socket_connect_timeout=0.5,
    socket_timeout=0.5,
    retry=Retry(NoBackoff(), 0),
)

with open(settings.COMETBOX_JWT_SECRET_FILE, "rb") as f:
    JWT_SECRET = f.read().strip()


def notify(mailbox, event):
    """Publish `event` to browsers reading `mailbox`; never fail the caller.

    A live update is a courtesy: the order is shipped whether or not a
    browser hears of it now (a page that reconnects reloads its state). So a
    gateway that is down, restarting or refusing the message is logged and
    the request carries on. Returns how many browsers got it, or None.
    """
    try:
        return cometbox.publish(mailbox, json.dumps(event))
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as e:
        log.warning("cometbox: %s not told (%s): gateway unreachable", mailbox, e)
    except redis.exceptions.ResponseError as e:
        # The gateway refused it: too large, a bad mailbox name, a full store.
        log.warning("cometbox: %s refused: %s", mailbox, e)
    return None


@require_POST
def mark_order_shipped(request, order_id):
    with transaction.atomic():
        order = request.user.orders.select_for_update().get(pk=order_id)
        order.ship()
        # After COMMIT, not before: a browser told "shipped" that reloads
        # must find the order shipped, and a rolled-back ship tells nobody.
        transaction.on_commit(
            lambda: notify(f"user:{order.owner_id}", {"type": "order.shipped", "order": order.pk})
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
