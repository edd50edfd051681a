/*
 * loadgen.c: the load generator of sockecho's benchmarks.
 *
 * One thread, epoll, non-blocking sockets, 127.0.0.1 only. Every reply is
 * verified byte for byte. Prints one JSON object on standard output.
 *
 * Modes:
 *   rr       N connections, each sends a SIZE-byte request and waits for the
 *            whole reply before sending the next (requests/s, latency).
 *   stream   N connections, each writes SIZE-byte chunks with at most
 *            WINDOW chunks not yet echoed (MB/s; latency per chunk).
 *   connect  N slots, each: connect, one SIZE-byte exchange, close (conn/s).
 *   udp      one socket, SIZE-byte datagrams, WINDOW outstanding (dgrams/s);
 *            a datagram unanswered after 200 ms counts as lost.
 *   idle     open N connections (at most 64 handshakes at once), do one
 *            exchange on each, print {"ready": ...} and hold them until
 *            standard input closes or HOLD seconds pass.
 *
 * --rate R paces rr, stream, connect and udp at R operations per second in all
 * (requests, SIZE-byte chunks, connections or datagrams), spread evenly over
 * the connections (udp: a datagram is sent only at its turn, each answered one
 * waiting for the next turn, so --window 1 keeps one in flight), instead of as
 * fast as the server answers: an operation never starts before its turn and
 * a late one starts at once, without a burst to catch up. At a rate every
 * server sustains, neither side is saturated, and the server's CPU time per
 * operation ("server_cpu" / "ops_per_s") compares servers where their top
 * rates are all at the generator's ceiling.
 *
 * By default the generator polls without sleeping (epoll_wait with a zero
 * timeout), so a reply is answered at once, not after a wake-up; --block waits
 * in epoll_wait instead (at most 10 ms, and with --rate no later than the next
 * turn, to the millisecond), leaving the CPU to others: benchmarks/
 * records_follow.py shares the generator's CPU with the follower it measures.
 * "gen_work" is the share of the measured time spent
 * handling events (after a poll that returned some): the rest is headroom.
 * "gen_cpu" is its CPU share (getrusage).
 *
 * Protocols (what a reply must be): echo (the request), upper (a lower-case
 * ASCII request comes back upper-cased), welcome (skip the banner line, then
 * a request "text\n" gets "OK...text\r\n").
 *
 * Build: gcc -O2 -o loadgen loadgen.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum mode { RR, STREAM, CONNECT, UDP, IDLE };
enum proto { P_ECHO, P_UPPER, P_WELCOME };
enum state { S_CONNECTING, S_BANNER, S_SENDING, S_RECEIVING, S_IDLE, S_PACED, S_DEAD };

static struct {
    enum mode mode;
    enum proto proto;
    int port, conns, size, window, server_pid, pending, spin;
    double duration, warmup, hold, rate;
    long long max_ops;
} o = {RR, P_ECHO, 0, 1, 64, 0, 0, 64, 1, 5.0, 0.5, 60.0, 0.0, 100000000LL};
static uint64_t pace_ns; /* --rate: time between two operations of a connection */

/* ---- time, histogram, counters ---------------------------------------- */

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + ts.tv_nsec;
}

#define HIST_US 1000000 /* 1 us buckets up to 1 s, then one overflow bucket */
static uint32_t hist[HIST_US + 1];
static uint64_t lat_max_us, lat_count;

static int measuring;          /* inside the measured window */
static long long ops, bytes_rx, errors, mismatches, lost, late;
static uint64_t t_measure, t_end;

static void record(uint64_t start_ns, uint64_t end_ns, long long nbytes) {
    if (!measuring) return;
    uint64_t us = (end_ns - start_ns) / 1000;
    hist[us < HIST_US ? us : HIST_US]++;
    if (us > lat_max_us) lat_max_us = us;
    lat_count++;
    ops++;
    bytes_rx += nbytes;
}

static uint64_t percentile(double p) {
    if (!lat_count) return 0;
    uint64_t want = (uint64_t)(p * lat_count + 0.5), seen = 0;
    if (want < 1) want = 1;
    for (int i = 0; i <= HIST_US; i++) {
        seen += hist[i];
        if (seen >= want) return i < HIST_US ? (uint64_t)i : lat_max_us;
    }
    return lat_max_us;
}

static double cpu_s(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

/* user+system CPU seconds of process `pid` (all its threads), or -1 */
static double proc_cpu_s(int pid) {
    char path[64], buf[1024];
    if (pid <= 0) return -1;
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    unsigned long ut, st;
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu",
                     &ut, &st) != 2)
        return -1;
    return (double)(ut + st) / sysconf(_SC_CLK_TCK);
}

static double cpu0, srv0, gen_cpu = -1, srv_cpu = -1, gen_work = -1;
static uint64_t work_ns; /* measured time spent in non-empty polls and handling */

static void start_measuring(uint64_t t) {
    measuring = 1;
    t_measure = t;
    t_end = t + (uint64_t)(o.duration * 1e9);
    cpu0 = cpu_s();
    work_ns = 0;
    srv0 = proc_cpu_s(o.server_pid);
}

static void stop_measuring(uint64_t t) {
    if (!measuring) return;
    measuring = 0;
    t_end = t;
    double wall = (t - t_measure) / 1e9;
    gen_cpu = (cpu_s() - cpu0) / wall;
    gen_work = work_ns / 1e9 / wall;
    double s = proc_cpu_s(o.server_pid);
    if (s >= 0 && srv0 >= 0) srv_cpu = (s - srv0) / wall;
}

/* ---- requests and expected replies ------------------------------------ */

/* Fill req (o.size bytes) for request number seq; fill exp, return its length. */
/* rr, connect: letters[i] = 'a' + i % 26 and capitals[i] its upper case,
 * SIZE + 26 bytes each, so that a request is one copy from an offset. The
 * generator's cost per request must not depend on the service: computing
 * each byte (a division, and toupper(3) for upper) made the generator busy
 * 7.5 us per 1 KiB echo request and 9.4 us per upper one (5.3 and 6.0 so),
 * which capped the upper50 figure of every server at the generator. */
static char *letters, *capitals;

static int make_request(char *req, char *exp, uint64_t seq) {
    int start = (int)(seq * 7 % 26);
    memcpy(req, letters + start, o.size);
    if (o.proto == P_WELCOME) {
        req[o.size - 1] = '\n';
        memcpy(exp, "OK...", 5);
        memcpy(exp + 5, req, o.size - 1);
        memcpy(exp + 5 + o.size - 1, "\r\n", 2);
        return o.size + 6;
    }
    memcpy(exp, (o.proto == P_UPPER ? capitals : letters) + start, o.size);
    return o.size;
}

static int expected_len(void) { return o.proto == P_WELCOME ? o.size + 6 : o.size; }

/* ---- TCP connections ---------------------------------------------------- */

struct conn {
    int fd, state, events;
    uint64_t seq, t_start;
    int sent, recvd, explen;
    char *req, *exp, *rbuf;
    uint64_t tx, rx;    /* stream: bytes written / echoed so far */
    uint64_t *chunk_t;  /* stream: when each chunk in flight was written */
    uint64_t due;       /* --rate: when its next operation may start */
};

/* --rate: may connection c start an operation now? If so, take its turn.
 * Without --rate it always may, and the clock is not read. */
static int take_turn(struct conn *c) {
    if (!pace_ns) return 1;
    uint64_t t = now_ns();
    if (t < c->due) return 0;
    c->due = c->due + pace_ns > t ? c->due + pace_ns : t;
    return 1;
}

static int ep;
static struct conn *conns;
static struct sockaddr_in addr;
static char *pattern; /* stream: pattern[i] = i % 251, SIZE + 251 bytes */

static void set_events(struct conn *c, int ev) {
    if (c->events == ev) return;
    struct epoll_event e = {.events = ev, .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &e);
    c->events = ev;
}

static void conn_fail(struct conn *c, int is_mismatch) {
    if (is_mismatch) mismatches++;
    else errors++;
    if (c->fd >= 0) close(c->fd);
    c->fd = -1;
    c->state = S_DEAD;
}

static int open_socket(void) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), one = 1;
    if (fd < 0) return -1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0 && errno != EINPROGRESS) {
        close(fd);
        return -1;
    }
    return fd;
}

static void conn_start(struct conn *c) { /* begin connecting (connect/idle modes) */
    c->t_start = now_ns();
    c->sent = c->recvd = 0;
    c->fd = open_socket();
    if (c->fd < 0) {
        errors++;
        c->state = S_DEAD;
        return;
    }
    c->state = S_CONNECTING;
    c->events = EPOLLOUT;
    struct epoll_event e = {.events = EPOLLOUT, .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &e);
}

static void send_request(struct conn *c) {
    c->state = S_SENDING;
    while (c->sent < o.size) {
        ssize_t n = send(c->fd, c->req + c->sent, o.size - c->sent, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN) {
                set_events(c, EPOLLOUT);
                return;
            }
            conn_fail(c, 0);
            return;
        }
        c->sent += n;
    }
    c->state = S_RECEIVING;
    set_events(c, EPOLLIN);
}

static void new_request(struct conn *c) {
    /* connect: the turn was taken when the connection started */
    if (o.mode != CONNECT && !take_turn(c)) {
        c->state = S_PACED;
        return;
    }
    c->seq++;
    c->explen = make_request(c->req, c->exp, c->seq);
    c->sent = c->recvd = 0;
    if (o.mode == RR) c->t_start = now_ns();
    send_request(c);
}

static long long idle_open, idle_started;

/* A whole reply arrived: verify it, then the next step of this mode. */
static void reply_done(struct conn *c) {
    uint64_t t = now_ns();
    if (memcmp(c->rbuf, c->exp, c->explen) != 0) {
        conn_fail(c, 1);
        return;
    }
    if (o.mode == IDLE) {
        idle_open++;
        c->state = S_IDLE;
        set_events(c, EPOLLIN);
        return;
    }
    record(c->t_start, t, c->explen);
    if (o.mode == CONNECT) {
        close(c->fd);
        c->fd = -1;
        if (!take_turn(c)) {
            c->state = S_PACED;
            return;
        }
        conn_start(c);
        return;
    }
    new_request(c);
}

/* Welcome: read and drop the banner line, keep whatever follows it. */
static void read_banner(struct conn *c) {
    char buf[4096];
    for (;;) {
        ssize_t n = recv(c->fd, buf, sizeof buf, 0);
        if (n == 0 || (n < 0 && errno != EAGAIN)) return conn_fail(c, 0);
        if (n < 0) return;
        char *nl = memchr(buf, '\n', n);
        if (nl) {
            int rest = (int)(n - (nl + 1 - buf));
            if (rest > 0) return conn_fail(c, 1); /* nothing was asked yet */
            new_request(c);
            return;
        }
    }
}

static void on_tcp_event(struct conn *c, uint32_t ev) {
    if (c->state == S_CONNECTING) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err || (ev & (EPOLLERR | EPOLLHUP))) {
            conn_fail(c, 0);
            if (o.mode == CONNECT) conn_start(c);
            return;
        }
        if (o.proto == P_WELCOME) {
            c->state = S_BANNER;
            set_events(c, EPOLLIN);
        } else {
            new_request(c);
        }
        return;
    }
    if (c->state == S_BANNER) return read_banner(c);
    if (c->state == S_SENDING && (ev & EPOLLOUT)) return send_request(c);
    if (c->state == S_IDLE) { /* the server closed or sent something: an error */
        conn_fail(c, 0);
        idle_open--;
        return;
    }
    if (c->state != S_RECEIVING) return;
    for (;;) {
        ssize_t n = recv(c->fd, c->rbuf + c->recvd, c->explen - c->recvd, 0);
        if (n == 0 || (n < 0 && errno != EAGAIN)) {
            conn_fail(c, 0);
            if (o.mode == CONNECT) conn_start(c);
            return;
        }
        if (n < 0) return;
        c->recvd += n;
        if (c->recvd == c->explen) return reply_done(c);
    }
}

/* ---- stream mode --------------------------------------------------------- */

static void stream_write(struct conn *c) {
    uint64_t limit = (uint64_t)o.window * o.size;
    c->state = S_RECEIVING;
    while (c->tx - c->rx < limit) {
        int off = (int)(c->tx % o.size);
        if (off == 0 && !take_turn(c)) {
            c->state = S_PACED;
            break;
        }
        ssize_t n = send(c->fd, pattern + c->tx % 251, o.size - off, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN) return set_events(c, EPOLLIN | EPOLLOUT);
            return conn_fail(c, 0);
        }
        c->tx += n;
        if (c->tx % o.size == 0)
            c->chunk_t[(c->tx / o.size - 1) % o.window] = now_ns();
    }
    set_events(c, EPOLLIN);
}

static void stream_read(struct conn *c) {
    for (;;) {
        ssize_t n = recv(c->fd, c->rbuf, o.size, 0);
        if (n == 0 || (n < 0 && errno != EAGAIN)) return conn_fail(c, 0);
        if (n < 0) break;
        if (memcmp(c->rbuf, pattern + c->rx % 251, n) != 0) return conn_fail(c, 1);
        uint64_t before = c->rx / o.size;
        c->rx += n;
        uint64_t t = now_ns();
        for (uint64_t k = before; k < c->rx / o.size; k++)
            record(c->chunk_t[k % o.window], t, o.size);
    }
    stream_write(c);
}

/* ---- UDP mode -------------------------------------------------------------- */

struct slot {
    uint32_t seq;
    int unsent;
    int waiting; /* --rate: answered, its next datagram waits for its turn */
    uint64_t t;
};

static void udp_fill(char *buf, uint32_t slot, uint32_t seq) {
    memcpy(buf, &slot, 4);
    memcpy(buf + 4, &seq, 4);
    for (int i = 8; i < o.size; i++) buf[i] = (char)(seq * 31 + i);
}

static void udp_send(int fd, struct slot *s, uint32_t idx, uint32_t *seq) {
    char buf[65536];
    s->seq = ++*seq;
    s->t = now_ns();
    udp_fill(buf, idx, s->seq);
    s->unsent = send(fd, buf, o.size, 0) != o.size;
    if (s->unsent && errno != EAGAIN && errno != ENOBUFS) errors++;
}

static void run_udp(void) {
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
        perror("udp socket");
        exit(2);
    }
    struct slot *slots = calloc(o.window, sizeof *slots);
    uint32_t seq = 0;
    char buf[65536], want[65536];
    uint64_t t = now_ns(), t_warm = t + (uint64_t)(o.warmup * 1e9), last_scan = t;
    uint64_t due = t; /* --rate: when the next datagram may be sent */
    for (int i = 0; i < o.window; i++) {
        if (pace_ns) slots[i].waiting = 1;
        else udp_send(fd, &slots[i], i, &seq);
    }
    t_end = t_warm + (uint64_t)(o.duration * 1e9);
    while ((t = now_ns()) < t_end && ops < o.max_ops) {
        if (!measuring && t >= t_warm) start_measuring(t);
        /* --rate: one datagram per turn, a late one at once, no catching up */
        for (int i = 0; pace_ns && i < o.window && t >= due; i++) {
            if (!slots[i].waiting) continue;
            slots[i].waiting = 0;
            udp_send(fd, &slots[i], i, &seq);
            due = due + pace_ns > t ? due + pace_ns : t;
        }
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int got = 0;
        if (poll(&p, 1, o.spin ? 0 : 10) > 0) got = 1;
        t = now_ns();
        for (;;) {
            ssize_t n = recv(fd, buf, sizeof buf, 0);
            if (n < 0) {
                if (errno != EAGAIN) errors++;
                break;
            }
            uint32_t idx, s;
            if (n < 8) { mismatches++; continue; }
            memcpy(&idx, buf, 4);
            memcpy(&s, buf + 4, 4);
            if (idx >= (uint32_t)o.window || slots[idx].seq != s) { late++; continue; }
            udp_fill(want, idx, s);
            if (n != o.size || memcmp(buf, want, n) != 0) mismatches++;
            else record(slots[idx].t, now_ns(), n);
            if (pace_ns) slots[idx].waiting = 1;
            else udp_send(fd, &slots[idx], idx, &seq);
        }
        if (got && measuring) work_ns += now_ns() - t;
        t = now_ns();
        if (t - last_scan > 20000000ULL) { /* every 20 ms: losses and retries */
            last_scan = t;
            for (int i = 0; i < o.window; i++) {
                if (slots[i].waiting) continue;
                int overdue = t - slots[i].t > 200000000ULL;
                if (overdue && !slots[i].unsent && measuring) lost++;
                if (overdue || slots[i].unsent) udp_send(fd, &slots[i], i, &seq);
            }
        }
    }
    stop_measuring(now_ns());
    close(fd);
}

/* ---- TCP driver ------------------------------------------------------------- */

/* rr and stream: connect every connection first (welcome: read its banner). */
static void setup_connections(void) {
    for (int i = 0; i < o.conns; i++) {
        struct conn *c = &conns[i];
        c->fd = open_socket();
        struct pollfd p = {.fd = c->fd, .events = POLLOUT};
        int err = 0;
        socklen_t len = sizeof err;
        if (c->fd < 0 || poll(&p, 1, 5000) != 1 ||
            getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0 || err) {
            fprintf(stderr, "loadgen: cannot connect to 127.0.0.1:%d\n", o.port);
            exit(2);
        }
        c->state = o.proto == P_WELCOME ? S_BANNER : S_RECEIVING;
        c->events = EPOLLIN;
        struct epoll_event e = {.events = EPOLLIN, .data.ptr = c};
        epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &e);
    }
    uint64_t t = now_ns();
    for (int i = 0; i < o.conns; i++) {
        struct conn *c = &conns[i];
        c->due = t + pace_ns * i / o.conns; /* --rate: staggered, not in bursts */
        if (o.mode == STREAM) stream_write(c);
        else if (c->state != S_BANNER) new_request(c);
    }
}

/* --rate: start the operations whose turn has come; return when the next
 * paced one is due (UINT64_MAX: none waits). */
static uint64_t release_paced(uint64_t t) {
    uint64_t next = UINT64_MAX;
    for (int i = 0; i < o.conns; i++) {
        struct conn *c = &conns[i];
        if (c->state != S_PACED) continue;
        if (t < c->due) {
            if (c->due < next) next = c->due;
            continue;
        }
        c->state = S_RECEIVING;
        if (o.mode == STREAM) stream_write(c);
        else if (o.mode == CONNECT) {
            take_turn(c);
            conn_start(c);
        }
        else new_request(c);
        if (measuring) work_ns += now_ns() - t;
        t = now_ns();
    }
    return next;
}

static int alive(void) {
    for (int i = 0; i < o.conns; i++)
        if (conns[i].state != S_DEAD) return 1;
    return 0;
}

static void run_tcp(void) {
    ep = epoll_create1(0);
    conns = calloc(o.conns, sizeof *conns);
    int n = expected_len() > o.size ? expected_len() : o.size;
    for (int i = 0; i < o.conns; i++) {
        struct conn *c = &conns[i];
        c->fd = -1;
        c->req = malloc(o.size);
        c->exp = malloc(n);
        c->rbuf = malloc(n);
        if (o.mode == STREAM) c->chunk_t = calloc(o.window, sizeof(uint64_t));
    }
    uint64_t t = now_ns(), deadline;
    if (o.mode == RR || o.mode == STREAM) {
        setup_connections();
    } else if (o.mode == CONNECT) {
        for (int i = 0; i < o.conns; i++) {
            if (!pace_ns) {
                conn_start(&conns[i]);
                continue;
            }
            conns[i].due = t + pace_ns * i / o.conns; /* staggered, as rr's */
            conns[i].state = S_PACED;
        }
    }
    uint64_t t_warm = now_ns() + (uint64_t)(o.warmup * 1e9);
    t_end = t_warm + (uint64_t)(o.duration * 1e9);
    deadline = t + (uint64_t)(o.hold * 1e9);
    struct epoll_event evs[256];
    int next_idle = 0;
    for (;;) {
        t = now_ns();
        if (o.mode == IDLE) {
            if (idle_open + errors >= o.conns || t > deadline) break;
            while (next_idle < o.conns && idle_started - idle_open - errors < o.pending) {
                conn_start(&conns[next_idle++]);
                idle_started++;
            }
        } else {
            if (!measuring && t >= t_warm && t < t_end) start_measuring(t);
            if (t >= t_end || ops >= o.max_ops || !alive()) break;
            if (o.mode == CONNECT && errors > 100000) break;
        }
        /* --block waits at most 10 ms, and with --rate no later than the
         * next turn (rounded up to a millisecond), so turns are kept */
        int wait_ms = o.spin ? 0 : 10;
        if (pace_ns) {
            uint64_t next = release_paced(t);
            if (wait_ms && next != UINT64_MAX) {
                uint64_t now = now_ns();
                uint64_t ms = next > now ? (next - now + 999999) / 1000000 : 0;
                if (ms < (uint64_t)wait_ms) wait_ms = (int)ms;
            }
        }
        int k = epoll_wait(ep, evs, 256, wait_ms);
        if (k <= 0) continue;
        t = now_ns();
        for (int i = 0; i < k; i++) {
            struct conn *c = evs[i].data.ptr;
            if (c->state == S_DEAD) continue;
            if (o.mode == STREAM) {
                if (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) stream_read(c);
                else stream_write(c);
            } else {
                on_tcp_event(c, evs[i].events);
            }
        }
        if (measuring) work_ns += now_ns() - t;
    }
    stop_measuring(now_ns());
}

/* idle: report, then hold the connections until stdin closes or time is up. */
static void idle_report_and_hold(double setup_s) {
    printf("{\"mode\": \"idle\", \"ready\": %lld, \"errors\": %lld, "
           "\"mismatches\": %lld, \"setup_s\": %.3f}\n",
           idle_open, errors, mismatches, setup_s);
    fflush(stdout);
    struct pollfd p = {.fd = 0, .events = POLLIN};
    poll(&p, 1, (int)(o.hold * 1000));
    for (int i = 0; i < o.conns; i++)
        if (conns[i].fd >= 0) close(conns[i].fd);
}

static void usage(void) {
    fprintf(stderr,
            "usage: loadgen MODE --port P [--proto echo|upper|welcome] [--conns N]\n"
            "  [--size B] [--window W] [--duration S] [--warmup S] [--max-ops N]\n"
            "  [--server-pid PID] [--hold S] [--block] [--rate OPS]\n"
            "  MODE: rr stream connect udp idle\n");
    exit(2);
}

int main(int argc, char **argv) {
    static struct option lo[] = {
        {"port", 1, 0, 'p'},     {"proto", 1, 0, 'P'},      {"conns", 1, 0, 'c'},
        {"size", 1, 0, 's'},     {"window", 1, 0, 'w'},     {"duration", 1, 0, 'd'},
        {"warmup", 1, 0, 'W'},   {"max-ops", 1, 0, 'm'},    {"server-pid", 1, 0, 'S'},
        {"hold", 1, 0, 'H'},     {"block", 0, 0, 'B'},      {"rate", 1, 0, 'r'},
        {0, 0, 0, 0}};
    int ch;
    if (argc < 2) usage();
    const char *m = argv[1];
    if (!strcmp(m, "rr")) o.mode = RR;
    else if (!strcmp(m, "stream")) o.mode = STREAM;
    else if (!strcmp(m, "connect")) o.mode = CONNECT;
    else if (!strcmp(m, "udp")) o.mode = UDP;
    else if (!strcmp(m, "idle")) o.mode = IDLE;
    else usage();
    optind = 2;
    while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (ch) {
        case 'p': o.port = atoi(optarg); break;
        case 'P':
            if (!strcmp(optarg, "echo")) o.proto = P_ECHO;
            else if (!strcmp(optarg, "upper")) o.proto = P_UPPER;
            else if (!strcmp(optarg, "welcome")) o.proto = P_WELCOME;
            else usage();
            break;
        case 'c': o.conns = atoi(optarg); break;
        case 's': o.size = atoi(optarg); break;
        case 'w': o.window = atoi(optarg); break;
        case 'd': o.duration = atof(optarg); break;
        case 'W': o.warmup = atof(optarg); break;
        case 'm': o.max_ops = atoll(optarg); break;
        case 'S': o.server_pid = atoi(optarg); break;
        case 'H': o.hold = atof(optarg); break;
        case 'B': o.spin = 0; break;
        case 'r': o.rate = atof(optarg); break;
        default: usage();
        }
    }
    if (o.port <= 0 || o.conns < 1 || o.size < 8 || o.size > 65536 || o.duration <= 0)
        usage();
    if (!o.window) o.window = o.mode == UDP ? 32 : 4;
    if (o.mode == STREAM && o.proto != P_ECHO) usage();
    if (o.rate < 0 || (o.rate > 0 && o.mode == IDLE)) usage();
    /* udp: the rate is of datagrams, whatever the window */
    if (o.rate > 0) pace_ns = (uint64_t)((o.mode == UDP ? 1 : o.conns) * 1e9 / o.rate);

    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);

    addr.sin_family = AF_INET;
    addr.sin_port = htons(o.port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    letters = malloc(o.size + 26);
    capitals = malloc(o.size + 26);
    for (int i = 0; i < o.size + 26; i++) {
        letters[i] = (char)('a' + i % 26);
        capitals[i] = (char)('A' + i % 26);
    }
    pattern = malloc(o.size + 251);
    for (int i = 0; i < o.size + 251; i++) pattern[i] = (char)(i % 251);

    uint64_t t0 = now_ns();
    if (o.mode == UDP) run_udp();
    else run_tcp();
    if (o.mode == IDLE) {
        idle_report_and_hold((now_ns() - t0) / 1e9);
        return 0;
    }
    double secs = (t_end - t_measure) / 1e9;
    if (!t_measure) secs = 0;
    printf("{\"mode\": \"%s\", \"conns\": %d, \"size\": %d, \"seconds\": %.3f, "
           "\"ops\": %lld, \"ops_per_s\": %.1f, \"mb_per_s\": %.3f, "
           "\"lat_us\": {\"p50\": %llu, \"p90\": %llu, \"p99\": %llu, \"max\": %llu}, "
           "\"errors\": %lld, \"mismatches\": %lld, \"lost\": %lld, \"late\": %lld, "
           "\"gen_cpu\": %.3f, \"gen_work\": %.3f, \"server_cpu\": %.3f, \"rate\": %.1f}\n",
           m, o.conns, o.size, secs, ops, secs > 0 ? ops / secs : 0.0,
           secs > 0 ? bytes_rx / secs / 1e6 : 0.0, (unsigned long long)percentile(0.5),
           (unsigned long long)percentile(0.9), (unsigned long long)percentile(0.99),
           (unsigned long long)lat_max_us, errors, mismatches, lost, late, gen_cpu,
           gen_work, srv_cpu, o.rate);
    return 0;
}
