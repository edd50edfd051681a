"""One thread, one selectors loop (the Python docs' / tutorials' design).

Serves echo, upper and welcome over TCP and echo over UDP, on 127.0.0.1 at
the ports given. Each connection keeps an output buffer (a partial send is
finished when the socket is writable) and is not read while more than 1 MiB
waits to be sent.

    python selectors_server.py --echo 9000 --upper 9001 --welcome 9002 --udp 9000
"""

import argparse
import selectors
import socket

BANNER = b"Welcome to the server. Type something and hit enter\r\n"
LIMIT = 1 << 20
sel = selectors.DefaultSelector()


class Connection:
    def __init__(self, sock, kind):
        self.sock, self.kind = sock, kind
        self.out = BANNER if kind == "welcome" else b""
        self.lines = b""
        sel.register(sock, self.events(), self)

    def events(self):
        events = selectors.EVENT_READ if len(self.out) < LIMIT else 0
        return events | (selectors.EVENT_WRITE if self.out else 0)

    def reply(self, data):
        if self.kind == "upper":
            return data.upper()
        if self.kind == "welcome":
            *lines, self.lines = (self.lines + data).split(b"\n")
            return b"".join(b"OK..." + line.rstrip(b"\r") + b"\r\n" for line in lines)
        return data

    def handle(self, mask):
        before = self.events()
        if mask & selectors.EVENT_READ:
            try:
                data = self.sock.recv(65536)
            except ConnectionError:
                data = b""
            if not data:
                sel.unregister(self.sock)
                self.sock.close()
                return
            self.out += self.reply(data)
        if self.out:
            try:
                sent = self.sock.send(self.out)
            except BlockingIOError:
                sent = 0
            except ConnectionError:
                sel.unregister(self.sock)
                self.sock.close()
                return
            self.out = self.out[sent:]
        if self.events() != before:
            sel.modify(self.sock, self.events(), self)


def listen(port, kind):
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", port))
    server.listen()
    server.setblocking(False)
    sel.register(server, selectors.EVENT_READ, ("accept", kind))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in ("echo", "upper", "welcome", "udp"):
        parser.add_argument(f"--{name}", type=int, metavar="PORT")
    args = parser.parse_args()
    for kind in ("echo", "upper", "welcome"):
        if getattr(args, kind):
            listen(getattr(args, kind), kind)
    if args.udp:
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("127.0.0.1", args.udp))
        udp.setblocking(False)
        sel.register(udp, selectors.EVENT_READ, ("udp", None))
    while True:
        for key, mask in sel.select():
            if isinstance(key.data, Connection):
                key.data.handle(mask)
            elif key.data[0] == "accept":
                try:
                    conn, _ = key.fileobj.accept()
                except BlockingIOError:
                    continue
                conn.setblocking(False)
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                Connection(conn, key.data[1])
            else:
                try:
                    data, addr = key.fileobj.recvfrom(65535)
                    key.fileobj.sendto(data, addr)
                except BlockingIOError:
                    pass


if __name__ == "__main__":
    main()
