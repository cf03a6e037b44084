"""What the demo's HTTP servers (order_service.py, tool_model.py) share: a JSON handler base class
and the command line and start-up of a threading server.

Python 3 standard library only; no access log on stderr.
"""

import argparse
import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class JsonHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Handler threads run concurrently; the lock keeps their log lines whole.
    log_lock = threading.Lock()
    log_path = None

    def log_message(self, format, *args):  # noqa: A002 - the base class's signature
        pass

    def send_json(self, status, body):
        data = json.dumps(body).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def append_log(self, line):
        """Append `line` (ending in a newline) to the --log file, if there is one."""
        if not self.log_path:
            return
        with self.log_lock:
            with open(self.log_path, "a", encoding="utf-8") as log:
                log.write(line)


def serve(handler_class, doc, default_port, log_help, banner):
    """Parse --host, --port and --log, then serve `handler_class` until interrupted.

    `doc` is the script's docstring: its first paragraph is the --help description. `banner` is the
    start-up line printed to stderr, with %s and %d for the host and port.
    """
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=default_port)
    parser.add_argument("--log", help=log_help)
    args = parser.parse_args()
    if args.log:
        directory = os.path.dirname(args.log)
        if directory:
            os.makedirs(directory, exist_ok=True)
        handler_class.log_path = args.log
    server = ThreadingHTTPServer((args.host, args.port), handler_class)
    server.daemon_threads = True
    print(banner % (args.host, args.port), file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
