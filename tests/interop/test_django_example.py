"""backend-examples/python/django_views.py, run without a Django project:
Django's few names it imports are stubbed, the rest is the real file with
the real redis-py. A gateway that is down or stuck costs the view a logged
warning, never an exception; publishing waits for the commit."""
import logging
import pathlib
import socket
import sys
import threading
import time
import types

import pytest

EXAMPLE = pathlib.Path(__file__).resolve().parents[2] / "backend-examples" / "python" / "django_views.py"


class Transaction:
    """django.db.transaction: atomic() as a context, on_commit run at its end."""

    def __init__(self):
        self.pending = []
        self.committed = []

    def atomic(self):
        tx = self

        class Atomic:
            def __enter__(self):
                return self

            def __exit__(self, exc_type, *_):
                callbacks, tx.pending = tx.pending, []
                if exc_type is None:  # rolled back: nobody is told
                    for f in callbacks:
                        tx.committed.append(f())

        return Atomic()

    def on_commit(self, f):
        self.pending.append(f)


def load_example(monkeypatch, socket_path, tmp_path):
    secret = tmp_path / "jwt-secret"
    secret.write_text("s3cret\n")
    transaction = Transaction()
    stubs = {
        "django": types.ModuleType("django"),
        "django.conf": types.SimpleNamespace(
            settings=types.SimpleNamespace(COMETBOX_SOCKET=str(socket_path), COMETBOX_JWT_SECRET_FILE=str(secret))
        ),
        "django.db": types.SimpleNamespace(transaction=transaction),
        "django.http": types.SimpleNamespace(JsonResponse=dict),
        "django.shortcuts": types.SimpleNamespace(render=lambda *a: a),
        "django.views": types.ModuleType("django.views"),
        "django.views.decorators": types.ModuleType("django.views.decorators"),
        "django.views.decorators.http": types.SimpleNamespace(require_POST=lambda f: f),
    }
    for name, module in stubs.items():
        monkeypatch.setitem(sys.modules, name, module)
    module = types.ModuleType("django_views")
    exec(compile(EXAMPLE.read_text(), str(EXAMPLE), "exec"), module.__dict__)
    return module, transaction


class Order:
    def __init__(self, fail=False):
        self.pk, self.owner_id, self.fail, self.shipped = 7, 42, fail, False

    def ship(self):
        if self.fail:
            raise RuntimeError("payment declined")
        self.shipped = True


def request_for(order):
    orders = types.SimpleNamespace(select_for_update=lambda: types.SimpleNamespace(get=lambda pk: order))
    return types.SimpleNamespace(user=types.SimpleNamespace(orders=orders, pk=42))


def test_view_publishes_after_commit(monkeypatch, tmp_path, gateway):
    views, tx = load_example(monkeypatch, gateway.socket, tmp_path)
    order = Order()
    assert views.mark_order_shipped(request_for(order), 7) == {"ok": True}
    assert order.shipped and tx.committed == [0]  # published once, after the commit
    import httpx

    body = httpx.get(gateway.url("/mailbox/user:42"), timeout=10).json()
    assert [m["data"] for m in body["messages"]] == ['{"type": "order.shipped", "order": 7}']
    # A rolled-back ship tells nobody.
    with pytest.raises(RuntimeError):
        views.mark_order_shipped(request_for(Order(fail=True)), 7)
    assert tx.committed == [0]


def test_gateway_down_is_logged_and_the_view_carries_on(monkeypatch, tmp_path, caplog):
    views, tx = load_example(monkeypatch, tmp_path / "no-gateway.sock", tmp_path)
    order = Order()
    with caplog.at_level(logging.WARNING):
        assert views.mark_order_shipped(request_for(order), 7) == {"ok": True}
    assert order.shipped and tx.committed == [None]
    assert "cometbox: user:42 not told" in caplog.text and "gateway unreachable" in caplog.text


def test_gateway_stuck_costs_half_a_second_not_the_request(monkeypatch, tmp_path, caplog):
    # Accepts, then never answers: the client's socket_timeout must end it.
    path = tmp_path / "stuck.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.listen()
    held = []
    threading.Thread(target=lambda: held.append(server.accept()), daemon=True).start()
    views, _ = load_example(monkeypatch, path, tmp_path)
    start = time.monotonic()
    with caplog.at_level(logging.WARNING):
        assert views.notify("user:42", {"type": "ping"}) is None
    elapsed = time.monotonic() - start
    assert elapsed < 1.5, f"a stuck gateway cost the request {elapsed:.1f} s"
    assert "not told" in caplog.text
    server.close()
