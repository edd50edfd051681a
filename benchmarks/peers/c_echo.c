/*
 * c_echo.c: a minimal epoll echo server in C (TCP and UDP, 127.0.0.1), used
 * only to show the load generator's ceiling: how fast loadgen can go when
 * the server is not the bottleneck. Not one of the compared peers.
 *
 *   c_echo --echo PORT --udp PORT
 * Build: gcc -O2 -o c_echo c_echo.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

struct conn {
    int fd;
    char *pending; /* bytes still to write back; reading stops meanwhile */
    size_t len, off;
};

static int ep;
static char buf[65536];

static int bound(int type, int port) {
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int fd = socket(AF_INET, type | SOCK_NONBLOCK, 0), one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0) exit(1);
    if (type == SOCK_STREAM) listen(fd, 4096);
    return fd;
}

static void watch(int op, int fd, unsigned ev, void *ptr) {
    struct epoll_event e = {.events = ev, .data.ptr = ptr};
    epoll_ctl(ep, op, fd, &e);
}

static void drop(struct conn *c) {
    close(c->fd);
    free(c->pending);
    free(c);
}

static void flush(struct conn *c) {
    while (c->off < c->len) {
        ssize_t n = send(c->fd, c->pending + c->off, c->len - c->off, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN) return watch(EPOLL_CTL_MOD, c->fd, EPOLLOUT, c);
            return drop(c);
        }
        c->off += n;
    }
    free(c->pending);
    c->pending = NULL;
    watch(EPOLL_CTL_MOD, c->fd, EPOLLIN, c);
}

static void serve(struct conn *c) {
    if (c->pending) return flush(c);
    for (;;) {
        ssize_t n = recv(c->fd, buf, sizeof buf, 0);
        if (n == 0 || (n < 0 && errno != EAGAIN)) return drop(c);
        if (n < 0) return;
        ssize_t w = send(c->fd, buf, n, MSG_NOSIGNAL);
        if (w < 0 && errno != EAGAIN) return drop(c);
        if (w < 0) w = 0;
        if (w < n) {
            c->len = n - w;
            c->off = 0;
            c->pending = malloc(c->len);
            memcpy(c->pending, buf + w, c->len);
            return flush(c);
        }
    }
}

int main(int argc, char **argv) {
    int tcp = -1, udp = -1, one = 1;
    static struct conn tcp_tag, udp_tag;
    ep = epoll_create1(0);
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--echo")) tcp = bound(SOCK_STREAM, atoi(argv[i + 1]));
        if (!strcmp(argv[i], "--udp")) udp = bound(SOCK_DGRAM, atoi(argv[i + 1]));
    }
    if (tcp >= 0) watch(EPOLL_CTL_ADD, tcp, EPOLLIN, &tcp_tag);
    if (udp >= 0) watch(EPOLL_CTL_ADD, udp, EPOLLIN, &udp_tag);
    struct epoll_event evs[256];
    for (;;) {
        int k = epoll_wait(ep, evs, 256, -1);
        for (int i = 0; i < k; i++) {
            void *p = evs[i].data.ptr;
            if (p == &tcp_tag) {
                int fd;
                while ((fd = accept4(tcp, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    struct conn *c = calloc(1, sizeof *c);
                    c->fd = fd;
                    watch(EPOLL_CTL_ADD, fd, EPOLLIN, c);
                }
            } else if (p == &udp_tag) {
                struct sockaddr_in from;
                socklen_t fl = sizeof from;
                ssize_t n;
                while ((n = recvfrom(udp, buf, sizeof buf, 0, (struct sockaddr *)&from, &fl)) >= 0) {
                    sendto(udp, buf, n, 0, (struct sockaddr *)&from, fl);
                    fl = sizeof from;
                }
            } else {
                serve(p);
            }
        }
    }
}
