/*
 * wssink: a minimal WebSocket (RFC 6455) client for the benchmarks that
 * opens connections, optionally sends one text message on each, and then
 * reads (and counts) everything the server sends, as fast as it arrives.
 * epoll, one thread, non-blocking sockets, libc only; plain ws:// on IPv4.
 * bench/push.sh and bench/waiting-latency.sh build it themselves
 * (build_c_tool in bench/lib.sh):
 *
 *   cc -O2 -Wall -Wextra -o /tmp/wssink bench/wssink.c
 *
 *   wssink [options] ws://IPv4:PORT/path
 *     -c N     connections                                              [1]
 *     -t TEXT  once a connection is open, send TEXT on it as one text
 *              message
 *     -i       the first message each connection receives is printed as
 *              "FIRST <connection> <text>" (non-printable bytes as '?')
 *              and not counted (e.g. a socket id the script sends on open)
 *
 * Lines on stdout (each flushed at once):
 *   READY <open>          every connection has settled (open or failed),
 *                         and the -t message was queued on each open one
 *   FIRST <i> <text>      with -i, as above
 *   COUNT <msgs> <bytes> <open>   on SIGUSR1: data messages (text or binary,
 *                         reassembled) and their payload bytes received so
 *                         far (-i's first messages not included), open
 *                         connections
 * and at the end a JSON line {"conns", "open", "msgs", "bytes",
 * "closed_by_server", "connect_fail", "errors"}. It ends on SIGTERM or
 * SIGINT (sending a close frame, 1000, on every open connection first), or
 * when no connection is left open. Pings are answered. The upgrade uses
 * RFC 6455's sample key, whose Sec-WebSocket-Accept is checked. Exit
 * status: 0, or 1 when a connection failed (not counting closes by the
 * server) or none opened, 2 on bad usage.
 */
#define _GNU_SOURCE
#include <signal.h>

#define PROG "wssink"
#include "wsbench.h"

#define READ_CHUNK 262144
#define MAX_LOGGED_FAILURES 5
#define SETUP_TIMEOUT_S 60.0

enum state { ST_FREE, ST_TCP, ST_UPGRADE, ST_OPEN, ST_DONE };

struct conn {
    int fd;
    enum state st;
    struct buf in, out;
    bool got_first, in_msg;
    size_t msg_bytes;
    unsigned char *first;    /* -i: the first message, reassembled */
    size_t first_len;
};

static int nconns = 1;
static const char *text;
static bool print_first;
static char host[64], path[1024] = "/", hostport[80];
static int port = 80;
static struct sockaddr_in dest;

static struct conn *conns;
static int ep;
static long long open_now, upgraded, msgs, bytes, closed_by_server, connect_fail, errors;
static int settled, logged;
static volatile sig_atomic_t want_count, want_stop;
static uint32_t rng;

static void conn_release(struct conn *c)
{
    if (c->fd >= 0) close(c->fd);
    c->fd = -1;
    if (c->st == ST_OPEN) open_now--;
    c->st = ST_DONE;
}

static void conn_fail(struct conn *c, const char *why, int saved_errno)
{
    bool before_open = c->st == ST_TCP || c->st == ST_UPGRADE;
    if (before_open) {
        connect_fail++;
        settled++;
    }
    errors++;
    if (logged < MAX_LOGGED_FAILURES) {
        logged++;
        log_failure("connection", (int)(c - conns), before_open, why, saved_errno);
    }
    conn_release(c);
}

/* Write out as much of c->out as the socket takes. False if c failed. */
static bool conn_flush(struct conn *c)
{
    if (buf_send(c->fd, &c->out) >= 0) return true;
    conn_fail(c, "write error", errno);
    return false;
}

static void send_frame(struct conn *c, int opcode, const unsigned char *data, size_t n)
{
    ws_put_frame(&c->out, opcode, data, n, xorshift32(&rng));
}

static void print_first_message(struct conn *c)
{
    char shown[256];
    size_t n = c->first_len < sizeof shown - 1 ? c->first_len : sizeof shown - 1;
    for (size_t i = 0; i < n; i++) shown[i] = c->first[i] >= 0x20 && c->first[i] < 0x7f ? (char)c->first[i] : '?';
    shown[n] = 0;
    printf("FIRST %d %s\n", (int)(c - conns), shown);
    fflush(stdout);
    free(c->first);
    c->first = NULL;
}

/* Parse the frames in c->in. False if c was dropped. */
static bool on_frames(struct conn *c)
{
    for (;;) {
        unsigned char *p = c->in.p + c->in.off;
        size_t avail = c->in.len - c->in.off;
        struct ws_head f;
        const char *why;
        int r = ws_next_frame(p, avail, (uint64_t)256 << 20, &f, &why);
        if (r == 0) break;
        if (r < 0) { conn_fail(c, why, 0); return false; }
        bool fin = f.fin;
        int op = f.op;
        uint64_t n = f.len;
        const unsigned char *data = p + f.hl;
        c->in.off += f.hl + (size_t)n;
        switch (op) {
        case 0: case 1: case 2: {
            if ((op == 0) != c->in_msg) { conn_fail(c, "bad fragmentation", 0); return false; }
            if (op != 0) {
                c->in_msg = true;
                c->msg_bytes = 0;
            }
            c->msg_bytes += (size_t)n;
            bool first = print_first && !c->got_first;
            if (first) {
                c->first = xrealloc(c->first, c->first_len + (size_t)n + 1);
                memcpy(c->first + c->first_len, data, (size_t)n);
                c->first_len += (size_t)n;
            }
            if (fin) {
                c->in_msg = false;
                if (first) {
                    c->got_first = true;
                    print_first_message(c);
                } else {
                    msgs++;
                    bytes += (long long)c->msg_bytes;
                }
            }
            break;
        }
        case 8:
            closed_by_server++;
            if (c->fd >= 0) {
                /* Echo the close (best effort) and drop the connection. */
                send_frame(c, 8, data, n >= 2 ? 2 : 0);
                conn_flush(c);
            }
            conn_release(c);
            return false;
        case 9:
            send_frame(c, 10, data, (size_t)n);
            break;
        case 10:
            break;
        default:
            conn_fail(c, "unknown opcode", 0);
            return false;
        }
    }
    if (c->in.off == c->in.len) c->in.off = c->in.len = 0;
    return true;
}

static void queue_upgrade(struct conn *c)
{
    char req[1400];
    int n = ws_sample_upgrade(req, sizeof req, path, hostport);
    buf_put(&c->out, req, (size_t)n);
    c->st = ST_UPGRADE;
}

/* Look for the complete 101 answer in c->in. False if c failed. */
static bool on_upgrade_answer(struct conn *c, bool *done)
{
    *done = false;
    unsigned char *p = c->in.p + c->in.off;
    size_t avail = c->in.len - c->in.off, head_len = http_head_len(p, avail);
    if (head_len == 0) {
        if (avail > 16384) { conn_fail(c, "upgrade answer too large", 0); return false; }
        return true;
    }
    char *head = xrealloc(NULL, head_len + 1);
    memcpy(head, p, head_len);
    head[head_len] = 0;
    c->in.off += head_len;
    const char *why = NULL;
    if (strncmp(head, "HTTP/1.1 101", 12) != 0) {
        why = "no 101 answer";
    } else {
        bool accept_ok = false;
        const char *pos = head, *name, *v;
        size_t nl, vl;
        while (head_field(&pos, &name, &nl, &v, &vl, " "))
            if (span_is(name, nl, "Sec-WebSocket-Accept"))
                accept_ok = vl == strlen(WS_ACCEPT) && strncmp(v, WS_ACCEPT, vl) == 0;
        if (!accept_ok) why = "missing or wrong Sec-WebSocket-Accept";
    }
    if (why) {
        /* show the status line */
        char *eol = strstr(head, "\r\n");
        if (eol) *eol = 0;
        if (logged < MAX_LOGGED_FAILURES) fprintf(stderr, "wssink: answer: %.120s\n", head);
    }
    free(head);
    if (why) { conn_fail(c, why, 0); return false; }
    c->st = ST_OPEN;
    upgraded++;
    open_now++;
    settled++;
    if (text) send_frame(c, 1, (const unsigned char *)text, strlen(text));
    *done = true;
    return true;
}

static void drive(int i, uint32_t events)
{
    struct conn *c = &conns[i];
    if (c->st == ST_TCP) {
        if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) return;
        int err = connect_error(c->fd);
        if (err) { conn_fail(c, "connect", err); return; }
        queue_upgrade(c);
    }
    if (!conn_flush(c)) return;
    bool eof = false;
    for (;;) {
        buf_reserve(&c->in, READ_CHUNK);
        ssize_t r = recv(c->fd, c->in.p + c->in.len, c->in.cap - c->in.len, 0);
        if (r > 0) { c->in.len += (size_t)r; continue; }
        if (r == 0) { eof = true; break; }
        if (errno == EAGAIN || errno == EINTR) break;
        if (errno == ECONNRESET) { eof = true; break; }
        conn_fail(c, "read error", errno);
        return;
    }
    if (c->st == ST_UPGRADE) {
        bool done;
        if (!on_upgrade_answer(c, &done)) return;
        if (!done) {
            if (eof) conn_fail(c, "server closed during the upgrade", 0);
            return;
        }
    }
    if (c->st == ST_OPEN && !on_frames(c)) return;
    if (eof) {
        conn_fail(c, "server closed the connection without a close frame", 0);
        return;
    }
    conn_flush(c);
}

static void conn_start(int i)
{
    struct conn *c = &conns[i];
    c->st = ST_TCP;
    const char *why = tcp_start(ep, &c->fd, &dest, 0, 0, (uint32_t)i);
    if (why) conn_fail(c, why, errno);
}

static void on_signal(int sig)
{
    if (sig == SIGUSR1) want_count = 1;
    else want_stop = 1;
}

static void usage(void)
{
    fprintf(stderr, "usage: wssink [-c conns] [-t text] [-i] ws://IPv4:port/path\n");
    exit(2);
}

int main(int argc, char **argv)
{
    int opt;
    while ((opt = getopt(argc, argv, "c:t:i")) != -1) {
        switch (opt) {
        case 'c': nconns = int_arg(optarg, 1, 1000000); break;
        case 't': text = optarg; break;
        case 'i': print_first = true; break;
        default: usage();
        }
    }
    if (optind != argc - 1) usage();
    const char *url = argv[optind], *rest;
    if (strncmp(url, "ws://", 5) != 0) usage();
    if (!(rest = parse_hostport(url + 5, host, sizeof host, &port))) usage();
    if (*rest == '/') {
        if (!path_ok(rest, sizeof path)) usage();
        snprintf(path, sizeof path, "%s", rest);
    }
    snprintf(hostport, sizeof hostport, "%s:%d", host, port);
    if (!ipv4_addr(&dest, host, port)) return 2;

    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal; /* no SA_RESTART: epoll_wait returns EINTR */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGUSR1, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    rng = xorshift32_seed();

    conns = calloc((size_t)nconns, sizeof *conns);
    if (!conns) { fprintf(stderr, "wssink: out of memory\n"); return 1; }
    for (int i = 0; i < nconns; i++) conns[i].fd = -1;
    ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) { perror("wssink: epoll_create1"); return 1; }

    const double t0 = now();
    bool ready = false;
    for (int i = 0; i < nconns; i++) conn_start(i);

    struct epoll_event evs[1024];
    while (!want_stop) {
        if (want_count) {
            want_count = 0;
            printf("COUNT %lld %lld %lld\n", msgs, bytes, open_now);
            fflush(stdout);
        }
        if (!ready) {
            if (settled >= nconns) {
                ready = true;
                printf("READY %lld\n", open_now);
                fflush(stdout);
            } else if (now() - t0 > SETUP_TIMEOUT_S) {
                fprintf(stderr, "wssink: timed out opening connections (%d of %d settled)\n", settled, nconns);
                errors++;
                break;
            }
        }
        if (ready && open_now == 0) break;
        int n = epoll_wait(ep, evs, (int)(sizeof evs / sizeof evs[0]), 100);
        if (n < 0) {
            if (errno == EINTR) continue;
            perror("wssink: epoll_wait");
            break;
        }
        for (int k = 0; k < n; k++) {
            int i = (int)evs[k].data.u32;
            if (conns[i].st == ST_TCP || conns[i].st == ST_UPGRADE || conns[i].st == ST_OPEN) drive(i, evs[k].events);
        }
    }

    long long open_at_end = open_now;
    for (int i = 0; i < nconns; i++) {
        struct conn *c = &conns[i];
        if (c->st != ST_OPEN) continue;
        static const unsigned char normal[2] = {0x03, 0xe8}; /* 1000 */
        send_frame(c, 8, normal, 2);
        conn_flush(c);
        if (c->fd >= 0) shutdown(c->fd, SHUT_WR);
    }
    printf("{\"conns\":%d,\"open\":%lld,\"open_at_end\":%lld,\"msgs\":%lld,\"bytes\":%lld,"
           "\"closed_by_server\":%lld,\"connect_fail\":%lld,\"errors\":%lld}\n",
           nconns, upgraded, open_at_end, msgs, bytes, closed_by_server, connect_fail, errors);
    fflush(stdout);
    return errors > 0 || upgraded == 0 ? 1 : 0;
}
