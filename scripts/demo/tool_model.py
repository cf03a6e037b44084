#!/usr/bin/env python3
"""A scripted stand-in for a tool-calling model: NOT a language model.

    python3 scripts/demo/tool_model.py --port 8082 --log .run/model-requests.log

The local model (SmolLM2-135M) cannot call tools, so the function-calling demo
(topologies/order-status.yaml) points `generate` at this OpenAI-compatible server instead. It
follows a fixed script, deterministically, and understands nothing:

- POST /v1/chat/completions
  - no `role: tool` message yet, a tool named `get_order_status` offered, and an order number in
    the last user message (`order 123`, `order number 123`, `order no. 123`, `order #123`): it
    calls get_order_status with that order_id and the first `[EMAIL_n]` placeholder of the message
    as `email` (left out when there is none); `finish_reason: tool_calls`.
  - a `role: tool` message present: it reads the last one's content as JSON and answers
    "Order {order_id} is {status}, with {carrier}, expected on {expected_delivery}. Updates go
    to {contact}." with the fields present (`contact` is a placeholder such as [EMAIL_1], kept
    verbatim for ragstream to restore), or "I could not get the order's status: {content}" for an
    `error` or a result that is not JSON.
  - otherwise: "I can only look up orders; please give an order number."
  `usage` is a rough count (characters / 4), `model` is always `scripted-tool-model`.
  `"stream": true` gets Server-Sent Events in OpenAI's streaming format, tool calls included.
  ragstream's prompt puts the question after the passages (`Request: ...`): only the text after
  the last `Request:` is searched when there is one, so a passage cannot supply the order number.
- GET /v1/models: a one-model list. GET /health: 200.

Every request body is appended as one line to the --log file, so the demo can show what the model
was sent: placeholders, never a real e-mail.

Python 3 standard library only; no access log on stderr.
"""

import itertools
import json
import re
import threading
import time
from urllib.parse import urlsplit

from demo_http import JsonHandler, serve

MODEL = "scripted-tool-model"
TOOL = "get_order_status"
ORDER_NUMBER = re.compile(r"order (?:number |no\.? |#)?(\d+)", re.IGNORECASE)
EMAIL_PLACEHOLDER = re.compile(r"\[EMAIL_\d+\]")
NO_ORDER = "I can only look up orders; please give an order number."

_ids = itertools.count(1)
_ids_lock = threading.Lock()


def next_id():
    with _ids_lock:
        return "chatcmpl-scripted-%d" % next(_ids)


def text_of(content):
    """A message's content as text: a string, null, or a list of OpenAI content parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part.get("text", "") if isinstance(part, dict) else str(part) for part in content
        )
    return str(content)


def offers_tool(tools, name):
    for tool in tools or []:
        if isinstance(tool, dict):
            function = tool.get("function") or {}
            if isinstance(function, dict) and function.get("name") == name:
                return True
    return False


def question_of(messages):
    """The last user message's text; only what follows its last `Request:` if it has one."""
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            text = text_of(message.get("content"))
            marker = text.rfind("Request:")
            return text[marker + len("Request:"):] if marker >= 0 else text
    return ""


def answer_from_result(content):
    try:
        result = json.loads(content)
    except (TypeError, ValueError):
        result = None
    if not isinstance(result, dict) or "error" in result or "status" not in result:
        return "I could not get the order's status: %s" % content
    order_id = result.get("order_id")
    text = ("Order %s is %s" % (order_id, result["status"])) if order_id is not None else (
        "The order is %s" % result["status"]
    )
    if result.get("carrier"):
        text += ", with %s" % result["carrier"]
    if result.get("expected_delivery"):
        text += ", expected on %s" % result["expected_delivery"]
    text += "."
    if result.get("contact"):
        text += " Updates go to %s." % result["contact"]
    return text


def script(body):
    """The scripted turn for a request: ("text", answer) or ("tool_call", arguments JSON)."""
    messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
    tool_messages = [m for m in messages if m.get("role") == "tool"]
    if tool_messages:
        return "text", answer_from_result(text_of(tool_messages[-1].get("content")))
    question = question_of(messages)
    number = ORDER_NUMBER.search(question)
    if number and offers_tool(body.get("tools"), TOOL):
        arguments = {"order_id": int(number.group(1))}
        placeholder = EMAIL_PLACEHOLDER.search(question)
        if placeholder:
            arguments["email"] = placeholder.group(0)
        return "tool_call", json.dumps(arguments)
    return "text", NO_ORDER


def usage_of(body, kind, payload):
    messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
    prompt = sum(len(text_of(m.get("content"))) for m in messages) // 4
    completion = 10 if kind == "tool_call" else len(payload) // 4
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def tool_call(arguments):
    return {"id": "call_1", "type": "function", "function": {"name": TOOL, "arguments": arguments}}


def pieces(text, count):
    """`text` cut into `count` pieces or fewer, at spaces where possible."""
    if not text:
        return [""]
    size = max(1, -(-len(text) // count))
    out, start = [], 0
    while start < len(text):
        end = min(len(text), start + size)
        space = text.rfind(" ", start + 1, end + 1) if end < len(text) else -1
        if space > start:
            end = space + 1
        out.append(text[start:end])
        start = end
    return out


class ModelHandler(JsonHandler):
    server_version = "scripted-tool-model/1"

    def send_error_json(self, status, message, kind="invalid_request_error"):
        self.send_json(status, {"error": {"message": message, "type": kind}})

    def read_body(self):
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            data = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def log_request_body(self, raw, body):
        line = json.dumps(body, ensure_ascii=False) if body is not None else raw.decode(
            "utf-8", "replace"
        ).replace("\r", " ").replace("\n", " ")
        self.append_log(line + "\n")

    def do_GET(self):
        path = urlsplit(self.path).path
        if path == "/health":
            self.send_json(200, {"status": "ok"})
        elif path == "/v1/models":
            self.send_json(200, {
                "object": "list",
                "data": [{"id": MODEL, "object": "model", "created": 0, "owned_by": "ragstream-demo"}],
            })
        else:
            self.send_error_json(404, "not found: %s" % path, "not_found_error")

    def do_POST(self):
        path = urlsplit(self.path).path
        raw = self.read_body()
        if path != "/v1/chat/completions":
            self.send_error_json(404, "not found: %s" % path, "not_found_error")
            return
        try:
            body = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            body = None
        self.log_request_body(raw, body)
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            self.send_error_json(400, "the body must be a JSON object with `messages`")
            return
        kind, payload = script(body)
        usage = usage_of(body, kind, payload)
        meta = {"id": next_id(), "created": int(time.time()), "model": MODEL}
        if body.get("stream") is True:
            self.stream(meta, kind, payload, usage)
            return
        if kind == "tool_call":
            message = {"role": "assistant", "content": None, "tool_calls": [tool_call(payload)]}
            finish = "tool_calls"
        else:
            message = {"role": "assistant", "content": payload}
            finish = "stop"
        self.send_json(200, {
            "id": meta["id"],
            "object": "chat.completion",
            "created": meta["created"],
            "model": MODEL,
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": usage,
        })

    def stream(self, meta, kind, payload, usage):
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True

        def event(delta, finish=None, with_usage=False):
            chunk = {
                "id": meta["id"],
                "object": "chat.completion.chunk",
                "created": meta["created"],
                "model": MODEL,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            if with_usage:
                chunk["usage"] = usage
            self.wfile.write(("data: %s\n\n" % json.dumps(chunk)).encode("utf-8"))
            self.wfile.flush()

        if kind == "tool_call":
            first = tool_call("")
            first["index"] = 0
            event({"role": "assistant", "content": None, "tool_calls": [first]})
            for piece in pieces(payload, 3):
                event({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
            event({}, "tool_calls", with_usage=True)
        else:
            event({"role": "assistant", "content": ""})
            for piece in pieces(payload, 4):
                event({"content": piece})
            event({}, "stop", with_usage=True)
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()


def main():
    serve(ModelHandler, __doc__, 8082, "append every request body to this file, one per line",
          "scripted tool model (not a language model) on http://%s:%d")


if __name__ == "__main__":
    main()
