"""A tiny job endpoint for trying Strait: `python examples/echo_endpoint.py [PORT]` (default 8000).

POST /      answers 200 with {"echo": <the payload>, "attempt": <X-Attempt>}: the run completes.
POST /fail  answers 503: the run is retried, then parked in dead_letter.
"""

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        attempt = int(self.headers.get("X-Attempt", 0))
        print(f"POST {self.path} {self.headers['X-Run-ID']} attempt {attempt}: {body.decode()}", flush=True)
        if self.path.startswith("/fail"):
            self.send_error(503)
            return
        answer = json.dumps({"echo": json.loads(body or b"{}"), "attempt": attempt}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: object) -> None:  # the print above is enough
        pass


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8000
    print(f"listening on http://127.0.0.1:{port}/ (POST / answers 200, POST /fail answers 503)", flush=True)
    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
