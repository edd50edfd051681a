"""A thread per connection (the classic tutorials' design), blocking sockets.

Serves echo, upper and welcome over TCP (one accept thread per service, one
thread per client) and echo over UDP (one thread), on 127.0.0.1.

    python threaded_server.py --echo 9000 --upper 9001 --welcome 9002 --udp 9000
"""

import argparse
import socket
import threading

BANNER = b"Welcome to the server. Type something and hit enter\r\n"


def client(conn, kind):
    with conn:
        if kind == "welcome":
            conn.sendall(BANNER)
        pending = b""
        try:
            while data := conn.recv(65536):
                if kind == "upper":
                    conn.sendall(data.upper())
                elif kind == "welcome":
                    *lines, pending = (pending + data).split(b"\n")
                    replies = [b"OK..." + line.rstrip(b"\r") + b"\r\n" for line in lines]
                    if replies:
                        conn.sendall(b"".join(replies))
                else:
                    conn.sendall(data)
        except ConnectionError:
            pass


def accept_loop(server, kind):
    while True:
        conn, _ = server.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=client, args=(conn, kind), daemon=True).start()


def udp_loop(sock):
    while True:
        data, addr = sock.recvfrom(65535)
        sock.sendto(data, addr)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in ("echo", "upper", "welcome", "udp"):
        parser.add_argument(f"--{name}", type=int, metavar="PORT")
    args = parser.parse_args()
    threads = []
    for kind in ("echo", "upper", "welcome"):
        if getattr(args, kind):
            server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            server.bind(("127.0.0.1", getattr(args, kind)))
            server.listen()
            threads.append(threading.Thread(target=accept_loop, args=(server, kind)))
    if args.udp:
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("127.0.0.1", args.udp))
        threads.append(threading.Thread(target=udp_loop, args=(udp,)))
    for thread in threads:
        thread.daemon = True
        thread.start()
    for thread in threads:
        thread.join()


if __name__ == "__main__":
    main()
