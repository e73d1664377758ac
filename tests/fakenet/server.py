"""The fake internet's web server (tests/fakenet/fakenet.sh): answers on
every address it holds with the address that was asked, so a test knows
which host it reached; /bytes/N streams N zero bytes (the download
benchmark) with sendfile from a sparse file on tmpfs, so the server's own
copying is not what limits the benchmark's anchor."""
import http.server
import os
import socketserver
import sys
import tempfile

CHUNK = bytes(1 << 20)


def zeros(n):
    """An unlinked sparse file of n zero bytes on tmpfs: its holes are
    sent from the kernel's zero page, without memory or disk."""
    f = tempfile.TemporaryFile(dir="/dev/shm")
    f.truncate(n)
    return f


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def do_GET(self):
        if self.path.startswith("/bytes/"):
            n = int(self.path.rsplit("/", 1)[1])
            self.send_response(200)
            self.send_header("Content-Length", str(n))
            self.end_headers()
            try:
                with zeros(n) as f:
                    self.wfile.flush()
                    while n > 0:
                        sent = os.sendfile(self.connection.fileno(), f.fileno(), None, n)
                        if sent == 0:
                            return
                        n -= sent
                return
            except OSError:
                pass  # no tmpfs or no sendfile here: write from memory
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
