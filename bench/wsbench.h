/*
 * wsbench.h: what the bench's C tools (wsload.c, fanout.c, wssink.c,
 * httpload.c) have in common, so that each is still built by one `cc` of
 * its own .c file (this header sits next to them) while a fix to the shared
 * parts reaches all of them. Everything is static inline: a tool that does
 * not use a helper gets no warning and no code for it.
 *
 * Before including it, a tool defines PROG (its name, for messages) and may
 * define BUF_FIRST_CAP; it must define usage(), which int_arg calls.
 */
#ifndef WSBENCH_H
#define WSBENCH_H

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifndef PROG
#error "define PROG (the tool's name) before including wsbench.h"
#endif
#ifndef BUF_FIRST_CAP
#define BUF_FIRST_CAP 4096
#endif

/* RFC 6455, section 1.3: this key's accept value. A fixed key spares the
 * tools that do not measure handshakes a SHA-1. */
#define WS_KEY "dGhlIHNhbXBsZSBub25jZQ=="
#define WS_ACCEPT "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
/* Appended to a key before its SHA-1 makes the accept value (section 4.2.2). */
#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

#ifdef OPENSSL_EVP_H
/* The accept value of the key[0 .. n) (n at most 64), NUL-terminated into
 * accept (29 bytes or more); for the tools that compute it, which link
 * libcrypto and include <openssl/evp.h> before this header. */
static inline void ws_accept_of(const char *key, size_t n, char *accept)
{
    unsigned char src[64 + sizeof WS_GUID], md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    memcpy(src, key, n);
    memcpy(src + n, WS_GUID, sizeof WS_GUID - 1);
    EVP_Digest(src, n + sizeof WS_GUID - 1, md, &mdlen, EVP_sha1(), NULL);
    EVP_EncodeBlock((unsigned char *)accept, md, (int)mdlen);
}
#endif

static void usage(void);

/* --------------------------------------------------------------- util ---- */
static inline double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* This process's user + system time, for its cpu_pct. */
static inline double cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static inline void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n);
    if (!q) {
        fprintf(stderr, PROG ": out of memory\n");
        exit(1);
    }
    return q;
}

/* Masking keys only have to be unknown to intermediaries ahead of time. */
static inline uint32_t xorshift32(uint32_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 17;
    *s ^= *s << 5;
    return *s;
}

static inline uint32_t xorshift32_seed(void)
{
    uint32_t s = 2463534242u ^ (uint32_t)getpid() * 2654435761u;
    return s ? s : 1;
}

/* A decimal option value in lo..hi; anything else is a usage error. */
static inline int int_arg(const char *s, int lo, int hi)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (!*s || *end || v < lo || v > hi) usage();
    return (int)v;
}

/* ------------------------------------------------------------ buffers ---- */
struct buf {
    unsigned char *p;
    size_t len, off, cap; /* data is p[off .. len) */
};

static inline void buf_reserve(struct buf *b, size_t extra)
{
    if (b->off > 0 && b->off == b->len) b->off = b->len = 0;
    if (b->len + extra <= b->cap) return;
    if (b->off > 0) { /* compact first */
        memmove(b->p, b->p + b->off, b->len - b->off);
        b->len -= b->off;
        b->off = 0;
        if (b->len + extra <= b->cap) return;
    }
    size_t cap = b->cap ? b->cap : BUF_FIRST_CAP;
    while (cap < b->len + extra) cap *= 2;
    b->p = xrealloc(b->p, cap);
    b->cap = cap;
}

static inline void buf_free(struct buf *b)
{
    free(b->p);
    memset(b, 0, sizeof *b);
}

static inline void buf_put(struct buf *b, const void *p, size_t n)
{
    buf_reserve(b, n);
    memcpy(b->p + b->len, p, n);
    b->len += n;
}

/* Send as much of b as the socket takes: 1 when all of it went (b is then
 * empty), 0 when the socket is full, -1 on an error (see errno). */
static inline int buf_send(int fd, struct buf *b)
{
    while (b->off < b->len) {
        ssize_t r = send(fd, b->p + b->off, b->len - b->off, MSG_NOSIGNAL);
        if (r >= 0) {
            b->off += (size_t)r;
            continue;
        }
        if (errno == EAGAIN || errno == EINTR) return 0;
        return -1;
    }
    b->off = b->len = 0;
    return 1;
}

/* Latency samples in microseconds, sorted once at the end for percentiles. */
struct u32s {
    uint32_t *v;
    size_t n, cap;
};

static inline void u32s_push(struct u32s *s, uint32_t x, size_t first_cap)
{
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : first_cap;
        s->v = xrealloc(s->v, s->cap * sizeof *s->v);
    }
    s->v[s->n++] = x;
}

static inline int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

static inline void u32s_sort(struct u32s *s)
{
    if (s->n) qsort(s->v, s->n, sizeof *s->v, cmp_u32);
}

static inline uint32_t u32s_pct(const struct u32s *s, double q)
{
    if (s->n == 0) return 0;
    size_t i = (size_t)((double)s->n * q);
    return s->v[i < s->n ? i : s->n - 1];
}

static inline uint32_t u32s_max(const struct u32s *s) { return s->n ? s->v[s->n - 1] : 0; }

/* --------------------------------------------------------- connecting ---- */
/* Start a non-blocking TCP connect to dst, watched by ep (edge-triggered)
 * under tag. With nsrc > 0 the socket is bound to 127.0.0.(2 + src % nsrc),
 * so that many connections do not run out of ephemeral ports. *fd is set as
 * soon as there is one (the caller closes it on failure). Returns NULL, or
 * the step that failed with errno telling why. */
static inline const char *tcp_start(int ep, int *fd, const struct sockaddr_in *dst, int nsrc, int src, uint32_t tag)
{
    *fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (*fd < 0) return "socket";
    int one = 1;
    setsockopt(*fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (nsrc > 0) {
        /* Pick the port at connect() time, per destination, not at bind(). */
        setsockopt(*fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
        struct sockaddr_in sa = {.sin_family = AF_INET};
        sa.sin_addr.s_addr = htonl(0x7f000002u + (uint32_t)(src % nsrc));
        if (bind(*fd, (struct sockaddr *)&sa, sizeof sa) < 0) return "bind";
    }
    if (connect(*fd, (const struct sockaddr *)dst, sizeof *dst) < 0 && errno != EINPROGRESS) return "connect";
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.u32 = tag};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, *fd, &ev) < 0) return "epoll_ctl";
    return NULL;
}

/* The outcome of a non-blocking connect, once epoll reports the socket:
 * 0 or the errno it failed with. */
static inline int connect_error(int fd)
{
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) err = errno;
    return err;
}

/* The first few failures go to stderr, the rest are only counted. */
static inline void log_failure(const char *what, int no, bool before_open, const char *why, int saved_errno)
{
    fprintf(stderr, PROG ": %s %d %s: %s%s%s\n", what, no, before_open ? "failed to open" : "failed", why,
            saved_errno ? ": " : "", saved_errno ? strerror(saved_errno) : "");
}

/* ---------------------------------------------------------------- URLs ---- */
/* "host[:port][/path]" (what follows the scheme): the host into host[cap]
 * and the port into *port (left as it is without one). Returns where the
 * path starts, or NULL if malformed. */
static inline const char *parse_hostport(const char *rest, char *host, size_t cap, int *port)
{
    size_t hlen = strcspn(rest, ":/");
    if (hlen == 0 || hlen >= cap) return NULL;
    memcpy(host, rest, hlen);
    host[hlen] = 0;
    rest += hlen;
    if (*rest == ':') {
        char *end;
        long p = strtol(rest + 1, &end, 10);
        if (p < 1 || p > 65535 || (*end && *end != '/')) return NULL;
        *port = (int)p;
        rest = end;
    }
    return rest;
}

/* A path the tools send as they got it: it must fit and hold no space or
 * line break. */
static inline bool path_ok(const char *path, size_t cap) { return strlen(path) < cap && !strpbrk(path, " \r\n"); }

/* The IPv4 address host:port into sa; false (with a message) if host is not
 * one. */
static inline bool ipv4_addr(struct sockaddr_in *sa, const char *host, int port)
{
    sa->sin_family = AF_INET;
    sa->sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, host, &sa->sin_addr) == 1) return true;
    fprintf(stderr, PROG ": host must be an IPv4 address: %s\n", host);
    return false;
}

/* ---------------------------------------------------------------- HTTP ---- */
/* The length of the head (up to and including the empty line) at p[0 .. n),
 * 0 while it is incomplete. */
static inline size_t http_head_len(const unsigned char *p, size_t n)
{
    for (size_t i = 0; i + 3 < n; i++)
        if (p[i] == '\r' && p[i + 1] == '\n' && p[i + 2] == '\r' && p[i + 3] == '\n') return i + 4;
    return 0;
}

/* The next header field of a NUL-terminated head: *pos starts at the head
 * (its status line) and moves on at each call. The value is trimmed of the
 * characters in blank. False after the last field. */
static inline bool head_field(const char **pos, const char **name, size_t *nl, const char **val, size_t *vl,
                              const char *blank)
{
    for (const char *line = strstr(*pos, "\r\n"); line && line[2] && line[2] != '\r'; line = strstr(line + 2, "\r\n")) {
        const char *n = line + 2, *colon = strchr(n, ':'), *end = strstr(n, "\r\n");
        if (!colon || colon > end) continue;
        const char *v = colon + 1;
        while (*v && strchr(blank, *v)) v++;
        size_t l = (size_t)(end - v);
        while (l > 0 && strchr(blank, v[l - 1])) l--;
        *pos = n;
        *name = n;
        *nl = (size_t)(colon - n);
        *val = v;
        *vl = l;
        return true;
    }
    return false;
}

/* Case-insensitive: is the span s[0 .. n) the string lit? */
static inline bool span_is(const char *s, size_t n, const char *lit)
{
    return n == strlen(lit) && strncasecmp(s, lit, n) == 0;
}

/* The upgrade request with RFC 6455's sample key (see WS_ACCEPT) into
 * req[cap]; returns its length. */
static inline int ws_sample_upgrade(char *req, size_t cap, const char *path, const char *hostport)
{
    return snprintf(req, cap,
                    "GET %s HTTP/1.1\r\n"
                    "Host: %s\r\n"
                    "Upgrade: websocket\r\n"
                    "Connection: Upgrade\r\n"
                    "Sec-WebSocket-Key: " WS_KEY "\r\n"
                    "Sec-WebSocket-Version: 13\r\n"
                    "Origin: http://localhost\r\n"
                    "\r\n",
                    path, hostport);
}

/* ------------------------------------------------------------- frames ---- */
/* Append a frame header: the first byte (FIN, RSV and opcode), the payload
 * length n, and the masking key when mask is not NULL (clients must mask,
 * servers must not: RFC 6455, section 5.3). */
static inline void ws_put_head(struct buf *out, unsigned char first, size_t n, const unsigned char *mask)
{
    unsigned char h[14];
    size_t hl = 0;
    unsigned char masked = mask ? 0x80 : 0;
    h[hl++] = first;
    if (n < 126) {
        h[hl++] = (unsigned char)(masked | n);
    } else if (n < 65536) {
        h[hl++] = masked | 126;
        h[hl++] = (unsigned char)(n >> 8);
        h[hl++] = (unsigned char)n;
    } else {
        h[hl++] = masked | 127;
        for (int s = 56; s >= 0; s -= 8) h[hl++] = (unsigned char)((uint64_t)n >> s);
    }
    if (mask) {
        memcpy(h + hl, mask, 4);
        hl += 4;
    }
    buf_put(out, h, hl);
}

/* Append data[0 .. n) XORed with the 4-byte mask: masking a payload and
 * unmasking it are the same operation. */
static inline void buf_put_xor(struct buf *out, const unsigned char *data, size_t n, const unsigned char *mask)
{
    buf_reserve(out, n);
    unsigned char *dst = out->p + out->len;
    for (size_t i = 0; i < n; i++) dst[i] = data[i] ^ mask[i & 3];
    out->len += n;
}

/* Append one masked frame, as a client sends it. */
static inline void ws_put_frame(struct buf *out, int opcode, const unsigned char *data, size_t n, uint32_t key)
{
    unsigned char mask[4];
    memcpy(mask, &key, 4);
    ws_put_head(out, (unsigned char)(0x80 | opcode), n, mask);
    buf_put_xor(out, data, n, mask);
}

struct ws_head {
    bool fin, masked;
    int rsv, op;
    uint64_t len; /* payload length */
    size_t hl;    /* header length */
};

/* A server frame's header at p[0 .. avail), avail >= 2. The first byte's
 * bits and the mask bit are always filled in, so that a bad frame is refused
 * before the rest of its header has come; len and hl only when the function
 * returns true (the whole header is there). */
static inline bool ws_parse_head(const unsigned char *p, size_t avail, struct ws_head *f)
{
    f->fin = p[0] & 0x80;
    f->rsv = (p[0] >> 4) & 7;
    f->op = p[0] & 15;
    f->masked = p[1] & 0x80;
    f->len = p[1] & 127;
    f->hl = 2;
    if (f->len == 126) {
        if (avail < 4) return false;
        f->len = (uint64_t)p[2] << 8 | p[3];
        f->hl = 4;
    } else if (f->len == 127) {
        if (avail < 10) return false;
        f->len = 0;
        for (int i = 0; i < 8; i++) f->len = f->len << 8 | p[2 + i];
        f->hl = 10;
    }
    return true;
}

/* Control frames are never fragmented and carry at most 125 bytes. */
static inline bool ws_control_ok(const struct ws_head *f) { return f->op < 8 || (f->fin && f->len <= 125); }

/* The next frame a server sent, at p[0 .. avail), with payloads up to
 * max_len: 1 when the whole frame is there (its header in *f, its payload
 * at p + f->hl), 0 while more bytes are needed, -1 for a frame to refuse
 * (*why says why). A bad first byte or mask bit is refused at once, before
 * the rest of the header has come. */
static inline int ws_next_frame(const unsigned char *p, size_t avail, uint64_t max_len, struct ws_head *f,
                                const char **why)
{
    if (avail < 2) return 0;
    bool whole = ws_parse_head(p, avail, f);
    if (f->masked) { *why = "server sent a masked frame"; return -1; }
    if (f->rsv) { *why = "frame with reserved bits set"; return -1; }
    if (!whole) return 0;
    if (f->len > max_len) { *why = "frame too large"; return -1; }
    if (avail < f->hl + f->len) return 0;
    if (!ws_control_ok(f)) { *why = "bad control frame"; return -1; }
    return 1;
}

/* The reason for a close frame's payload d[0 .. n) into why[cap]. */
static inline void ws_close_why(char *why, size_t cap, const unsigned char *d, uint64_t n)
{
    int code = n >= 2 ? (d[0] << 8 | d[1]) : 1005;
    snprintf(why, cap, "server closed the WebSocket (code %d)", code);
}

#endif
