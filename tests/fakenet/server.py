"""The fake internet's web server (tests/fakenet/fakenet.sh): answers on
every address it holds with the address that was asked, so a test knows
which host it reached; /bytes/N streams N zero bytes (the download
benchmark)."""
import http.server
import socketserver
import sys

CHUNK = bytes(1 << 20)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def do_GET(self):
        if self.path.startswith("/bytes/"):
            n = int(self.path.rsplit("/", 1)[1])
            self.send_response(200)
            self.send_header("Content-Length", str(n))
            self.end_headers()
            view = memoryview(CHUNK)
            while n > 0:
                k = min(n, len(CHUNK))
                self.wfile.write(view[:k])
                n -= k
            return
        addr = self.connection.getsockname()[0]
        body = f"hello from {self.server.name} at {addr}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


if __name__ == "__main__":
    port, name = int(sys.argv[1]), sys.argv[2]
    srv = Server(("0.0.0.0", port), Handler)
    srv.name = name
    srv.serve_forever()
