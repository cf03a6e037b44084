#!/usr/bin/env python3
"""A small order-status service for the function-calling demo (topologies/order-status.yaml).

    python3 scripts/demo/order_service.py --port 8081 --log .run/order-calls.log

GET /orders/{order_id}?email=... answers with the order's status as JSON when the e-mail is the one
the order was placed with:

    200 {"order_id": "123", "status": "in transit", "carrier": "PostNord",
         "expected_delivery": "2026-12-09", "contact": "<the e-mail it was called with>"}
    403 {"error": "order 123 was not placed with that e-mail"}
    404 {"error": "no order 999"}
    400 {"error": "..."}  (no e-mail given)

The reply echoes the real e-mail it received as `contact`: ragstream must mask it again before the
model reads the result. Each call appends one line to the log file: the order id, the e-mail it
received and the Idempotency-Key header ragstream sends, so the demo can show that the tool got the
real e-mail while the model only ever saw a placeholder. GET /health answers 200.

Python 3 standard library only; no access log on stderr.
"""

import time
from urllib.parse import parse_qs, unquote, urlsplit

from demo_http import JsonHandler, serve

# The demo customer's orders and one of someone else's (asking about 125 as the demo customer: 403).
ORDERS = {
    "123": {
        "email": "maria.jensen@example.com",
        "status": "in transit",
        "carrier": "PostNord",
        "expected_delivery": "2026-12-09",
    },
    "124": {
        "email": "maria.jensen@example.com",
        "status": "delivered",
        "carrier": "DHL",
        "expected_delivery": "2026-11-28",
    },
    "125": {
        "email": "jonas.berg@example.com",
        "status": "awaiting pickup",
        "carrier": "Bring",
        "expected_delivery": "2026-12-05",
    },
}


class OrderHandler(JsonHandler):
    server_version = "demo-order-service/1"

    def log_call(self, order_id, email, status):
        key = self.headers.get("Idempotency-Key") or "-"
        self.append_log("%s order_id=%s email=%s idempotency_key=%s status=%d\n" % (
            time.strftime("%Y-%m-%dT%H:%M:%S"),
            order_id,
            email if email is not None else "-",
            key,
            status,
        ))

    def do_GET(self):
        url = urlsplit(self.path)
        if url.path == "/health":
            self.send_json(200, {"status": "ok"})
            return
        parts = url.path.strip("/").split("/")
        if len(parts) != 2 or parts[0] != "orders" or not parts[1]:
            self.send_json(404, {"error": "not found: %s" % url.path})
            return
        order_id = unquote(parts[1])
        emails = parse_qs(url.query).get("email")
        email = emails[0] if emails else None
        status, body = self.lookup(order_id, email)
        self.log_call(order_id, email, status)
        self.send_json(status, body)

    def do_POST(self):
        self.send_json(405, {"error": "only GET is served"})

    @staticmethod
    def lookup(order_id, email):
        order = ORDERS.get(order_id)
        if order is None:
            return 404, {"error": "no order %s" % order_id}
        if not email:
            return 400, {"error": "the e-mail order %s was placed with is required" % order_id}
        if email.strip().lower() != order["email"]:
            return 403, {"error": "order %s was not placed with that e-mail" % order_id}
        return 200, {
            "order_id": order_id,
            "status": order["status"],
            "carrier": order["carrier"],
            "expected_delivery": order["expected_delivery"],
            "contact": email,
        }


def main():
    serve(OrderHandler, __doc__, 8081, "append one line per order call to this file",
          "order service on http://%s:%d")


if __name__ == "__main__":
    main()
