/*
 * cecho: the floor of the echo benchmarks. A WebSocket echo server in plain
 * C that does only what the kernel makes unavoidable: one thread, epoll
 * edge-triggered, one recv and one send per message; no scripting, no UTF-8
 * check, no rate limit, no timers. bench/compare.sh runs it beside wsgate and
 * nginx when CECHO=1, so that every run shows how much of a workload's cost
 * is the kernel's (what no server can go below on this machine) and how far
 * each server is from it.
 *
 *   cecho -p PORT            listens on 127.0.0.1:PORT
 *
 * It answers GET /api/v1/solution/health with 200 (the harnesses' readiness
 * probe), upgrades any other GET with a Sec-WebSocket-Key, echoes text and
 * binary frames as they come (fragments too), answers pings, echoes a close
 * frame and then closes. A malformed request or frame closes the socket.
 *
 * Built by bench/lib.sh (build_c_tool): cc -O2 -o /tmp/wsgate-bench-cecho
 * bench/cecho.c -lcrypto
 */
#define _GNU_SOURCE /* accept4 */
#include <openssl/evp.h> /* before wsbench.h: ws_accept_of */
#include <signal.h>

#define PROG "cecho"
#include "wsbench.h"

#define MAX_HEAD 8192
#define MAX_FRAME (16u << 20)
#define READ_CHUNK 65536

struct conn {
    int fd;
    bool upgraded, closing;
    struct buf in, out;
};

static void usage(void)
{
    fprintf(stderr, "usage: cecho -p PORT\n");
    exit(2);
}

static void drop(struct conn *c)
{
    close(c->fd);
    buf_free(&c->in);
    buf_free(&c->out);
    free(c);
}

/* The 101 for the head at h (NUL-terminated), or false when it is no upgrade. */
static bool upgrade(struct conn *c, const char *h)
{
    const char *pos = h, *name, *val;
    size_t nl, vl;
    while (head_field(&pos, &name, &nl, &val, &vl, " \t")) {
        if (!span_is(name, nl, "sec-websocket-key") || vl == 0 || vl > 64) continue;
        char accept[32];
        ws_accept_of(val, vl, accept);
        char resp[256];
        int n = snprintf(resp, sizeof resp,
                         "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                         "Sec-WebSocket-Accept: %s\r\n\r\n",
                         accept);
        buf_put(&c->out, resp, (size_t)n);
        return true;
    }
    return false;
}

/* Handles what c->in holds; false when the socket is to be closed at once. */
static bool process(struct conn *c)
{
    unsigned char *p = c->in.p + c->in.off;
    size_t avail = c->in.len - c->in.off;
    if (!c->upgraded) {
        size_t hl = http_head_len(p, avail);
        if (hl == 0) return avail < MAX_HEAD;
        if (hl > MAX_HEAD) return false;
        char head[MAX_HEAD + 1];
        memcpy(head, p, hl);
        head[hl] = 0;
        c->in.off += hl;
        if (strncmp(head, "GET /api/v1/solution/health ", 28) == 0) {
            static const char ok[] = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n";
            buf_put(&c->out, ok, sizeof ok - 1);
            c->closing = true;
            return true;
        }
        if (strncmp(head, "GET ", 4) != 0 || !upgrade(c, head)) return false;
        c->upgraded = true;
        p += hl;
        avail -= hl;
    }
    struct ws_head f;
    while (!c->closing && avail >= 2) {
        bool whole = ws_parse_head(p, avail, &f);
        if (!f.masked || f.rsv || (whole && (f.len > MAX_FRAME || !ws_control_ok(&f)))) return false;
        if (!whole || avail < f.hl + 4 + f.len) break;
        const unsigned char *mask = p + f.hl, *data = mask + 4;
        size_t n = (size_t)f.len;
        if (f.op == 10) goto next; /* pong */
        int op = f.op == 9 ? 10 : f.op;
        ws_put_head(&c->out, (unsigned char)((f.fin ? 0x80 : 0) | op), n, NULL);
        buf_put_xor(&c->out, data, n, mask);
        if (f.op == 8) c->closing = true;
    next:
        p += f.hl + 4 + n;
        avail -= f.hl + 4 + n;
        c->in.off += f.hl + 4 + n;
    }
    return true;
}

/* Sends what c->out holds; false when the socket is to be closed: a failed
 * send, or a closing socket whose last bytes are out. */
static bool flush(struct conn *c)
{
    return buf_send(c->fd, &c->out) >= 0 && !(c->closing && c->out.len == 0);
}

/* Reads until the socket is drained, answering as it goes; false to close. */
static bool readable(struct conn *c)
{
    for (;;) {
        buf_reserve(&c->in, READ_CHUNK);
        size_t room = c->in.cap - c->in.len;
        ssize_t r = recv(c->fd, c->in.p + c->in.len, room, 0);
        if (r == 0) return false;
        if (r < 0) return errno == EAGAIN || errno == EINTR;
        c->in.len += (size_t)r;
        if (!process(c)) return false;
        if (!flush(c)) return false;
        if ((size_t)r < room) return true;
    }
}

int main(int argc, char **argv)
{
    int port = 0, opt;
    while ((opt = getopt(argc, argv, "p:")) != -1) {
        if (opt == 'p') port = int_arg(optarg, 1, 65535);
        else usage();
    }
    if (port == 0 || optind != argc) usage();
    signal(SIGPIPE, SIG_IGN);

    int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(ls, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(ls, 4096) != 0) {
        perror(PROG ": listen");
        return 1;
    }
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev);

    struct epoll_event events[256];
    for (;;) {
        int n = epoll_wait(ep, events, 256, -1);
        for (int i = 0; i < n; i++) {
            struct conn *c = events[i].data.ptr;
            if (c == NULL) {
                int fd;
                while ((fd = accept4(ls, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    c = calloc(1, sizeof *c);
                    if (c == NULL) {
                        close(fd);
                        continue;
                    }
                    c->fd = fd;
                    struct epoll_event cev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = c};
                    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &cev);
                }
                continue;
            }
            bool keep = true;
            if (events[i].events & EPOLLOUT && c->out.len > c->out.off) keep = flush(c);
            if (keep && events[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) keep = readable(c);
            if (!keep) drop(c); /* close() also takes the socket out of the epoll set */
        }
    }
}
