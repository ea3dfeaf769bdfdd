#!/usr/bin/env python3
"""Local only (make run): one HTTP server on loopback standing in for Slack, Pushover and
Pushbullet, so that the alarm relay's requests (unbit-alarmd --slack-base, --pushover-base,
--pushbullet-base, mapped here by scripts/local-overrides) reach something that shows them
instead of the Internet.

Every request is appended to the log as one line, what the service would have received:
    2026-11-30 17:05:01 UTC POST /slack/services/T000/B000/XXXX application/json {"text": ...}
(Pushbullet's Access-Token header is written before the body, as `Access-Token: ...`), and
answered as the service answers a good request. The log is root's (0600): the requests carry
the customer's tokens, as they would to the services themselves.

usage: local-receivers.py PORT LOG
"""

import datetime
import http.server
import os
import sys


class Receiver(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode("utf-8", "replace")
        when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        parts = [when, "POST", self.path, self.headers.get("Content-Type", "-")]
        if self.headers.get("Access-Token"):
            parts.append("Access-Token: " + self.headers["Access-Token"])
        parts.append(body.replace("\n", " "))
        line = " ".join(parts) + "\n"
        # One write of a whole line with O_APPEND: lines never interleave.
        fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)
        if self.path.startswith("/slack/"):
            answer, kind = b"ok", "text/plain"
        elif self.path.startswith("/pushover/"):
            answer, kind = b'{"status":1,"request":"local"}', "application/json"
        elif self.path.startswith("/pushbullet/"):
            answer, kind = b'{"active":true,"type":"note"}', "application/json"
        else:
            self.send_error(404, "not a path of Slack, Pushover or Pushbullet")
            return
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, fmt, *args):
        # The request line goes to uWSGI's log (stderr); the bodies only to LOG.
        sys.stderr.write("receivers: %s\n" % (fmt % args))


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    PORT, LOG = int(sys.argv[1]), sys.argv[2]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", PORT), Receiver)
    server.serve_forever()
