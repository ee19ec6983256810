/*
 * httpload: the project's HTTP/1.1 keep-alive load generator (epoll, one
 * thread, non-blocking sockets, libc only), for plain http:// on IPv4.
 * bench/push.sh builds it itself (build_c_tool in bench/lib.sh):
 *
 *   cc -O2 -Wall -Wextra -o /tmp/httpload bench/httpload.c
 *
 *   httpload [options] http://IPv4:PORT/path
 *     -c N        keep-alive connections, each a closed loop: send one
 *                 request, read the complete response, send the next   [8]
 *     -d S        seconds to measure                                   [10]
 *     -w S        warm-up seconds before the measured window (requests
 *                 are made but not counted in the window's figures)     [0]
 *     -m METHOD   request method               [GET, or POST with -b]
 *     -b BODY     request body, sent with Content-Length (POST, PUT and
 *                 PATCH without -b send Content-Length: 0)
 *     -H "Name: value"   an extra request header (repeatable, up to 32)
 *
 * The window opens when every connection has settled (connected or failed)
 * plus -w seconds, and lasts -d seconds; a response counts in it when it
 * completes inside it. No request is sent after the window; the requests in
 * flight then get up to 2 s to finish (counted in the totals only).
 *
 * A response is read completely: the status line, the headers, then a body
 * of Content-Length bytes, a chunked body, none for 1xx/204/304 (and HEAD),
 * or, without either header, everything up to the server's close. A
 * response with `Connection: close` (or an HTTP/1.0 one without
 * keep-alive) ends its connection, which is opened again (counted in
 * "reconnects"). Interim 100 Continue answers are skipped.
 *
 * Output: one JSON line on stdout:
 *   requests, requests_per_s, statuses (status -> count), p50_us, p90_us,
 *   p99_us, p999_us, max_us   -- responses completed inside the window and
 *                                their latency (request sent -> response
 *                                complete)
 *   requests_total, statuses_total  -- every response, warm-up and drain
 *                                      included
 *   reconnects, connect_fail, errors, cpu_pct (this process, % of one core
 *   over the window), plus the parameters.
 * "errors" counts every connection that failed (connect_fail included): a
 * refused or reset connection, the server closing in the middle of a
 * response, a malformed response. A failed connection is not reopened. The
 * first few failures are described on stderr. Exit status: 0, or 1 when
 * there were errors or no response at all, 2 on bad usage.
 */
#define _GNU_SOURCE
#include <signal.h>

#define PROG "httpload"
#include "wsbench.h"

#define READ_CHUNK 65536
#define MAX_HEAD_BYTES 65536
#define MAX_HEADERS 32
#define MAX_LOGGED_FAILURES 5
#define SETUP_TIMEOUT_S 30.0
#define DRAIN_S 2.0

enum state { ST_FREE, ST_CONNECTING, ST_ACTIVE, ST_DEAD };

struct conn {
    int fd;
    enum state st;
    unsigned char *in;
    size_t in_len, in_cap;
    size_t out_off;      /* bytes of the request already written */
    bool waiting;        /* a request is in flight */
    double sent_at;
};

/* ------------------------------------------------------------ options ---- */
static int nconns = 8, secs = 10, warmup = 0;
static const char *method;
static const char *body;
static const char *extra_headers[MAX_HEADERS];
static int n_extra;
static char host[64], path[2048] = "/";
static int port = 80;
static struct sockaddr_in dest;
static char *request;
static size_t request_len;
static bool head_method;

/* -------------------------------------------------------------- state ---- */
static struct conn *conns;
static int ep;
static double t_measure0, t_end; /* the measured window (0 until it opens) */
static long long status_win[1000], status_all[1000];
static long long n_win, n_all, reconnects, connect_fail, errors;
static int settled, logged;
static struct u32s lat;

static void record_latency(double seconds)
{
    double us = seconds * 1e6;
    u32s_push(&lat, us > 4e9 ? UINT32_MAX : (uint32_t)us, (size_t)1 << 16);
}

static bool in_window(double t) { return t_measure0 > 0 && t >= t_measure0 && t < t_end; }

/* ------------------------------------------------------ connection life ---- */
static void conn_start(int i);

static void conn_close(struct conn *c)
{
    if (c->fd >= 0) close(c->fd);
    c->fd = -1;
    c->in_len = 0;
    c->out_off = 0;
    c->waiting = false;
}

/* Count and (for the first few) describe a failure; the connection is done. */
static void conn_fail(struct conn *c, const char *why, int saved_errno)
{
    bool connecting = c->st == ST_CONNECTING;
    if (connecting) {
        connect_fail++;
        settled++;
    }
    errors++;
    if (logged < MAX_LOGGED_FAILURES) {
        logged++;
        log_failure("connection", (int)(c - conns), connecting, why, saved_errno);
    }
    conn_close(c);
    c->st = ST_DEAD;
}

/* Write out what is left of the current request. False if c failed. */
static bool conn_flush(struct conn *c)
{
    while (c->waiting && c->out_off < request_len) {
        ssize_t r = send(c->fd, request + c->out_off, request_len - c->out_off, MSG_NOSIGNAL);
        if (r >= 0) {
            c->out_off += (size_t)r;
            continue;
        }
        if (errno == EAGAIN || errno == EINTR) return true;
        conn_fail(c, "write error", errno);
        return false;
    }
    return true;
}

static bool send_request(struct conn *c, double t)
{
    c->waiting = true;
    c->out_off = 0;
    c->sent_at = t;
    return conn_flush(c);
}

/* ------------------------------------------------------------ parsing ---- */
static const unsigned char *find_crlf(const unsigned char *p, size_t n)
{
    for (size_t i = 0; i + 1 < n; i++)
        if (p[i] == '\r' && p[i + 1] == '\n') return p + i;
    return NULL;
}

/* Length of a complete chunked body (trailers included) at p, 0 if more
 * bytes are needed, -1 if malformed. */
static long long chunked_length(const unsigned char *p, size_t n)
{
    size_t off = 0;
    for (;;) {
        const unsigned char *eol = find_crlf(p + off, n - off);
        if (!eol) return n - off > 1024 ? -1 : 0;
        char *end;
        unsigned long long size = strtoull((const char *)p + off, &end, 16);
        if (end == (const char *)p + off || (end != (const char *)eol && *end != ';' && *end != ' '))
            return -1;
        off = (size_t)(eol - p) + 2;
        if (size == 0) break;
        if (size > ((size_t)1 << 30)) return -1;
        if (n - off < size + 2) return 0;
        if (p[off + size] != '\r' || p[off + size + 1] != '\n') return -1;
        off += size + 2;
    }
    for (;;) { /* trailers, up to the empty line */
        const unsigned char *eol = find_crlf(p + off, n - off);
        if (!eol) return n - off > MAX_HEAD_BYTES ? -1 : 0;
        bool empty = eol == p + off;
        off = (size_t)(eol - p) + 2;
        if (empty) return (long long)off;
    }
}

static bool header_is(const char *line, size_t len, const char *name, const char **value, size_t *vlen)
{
    size_t nl = strlen(name);
    if (len <= nl || line[nl] != ':' || strncasecmp(line, name, nl) != 0) return false;
    const char *v = line + nl + 1, *e = line + len;
    while (v < e && (*v == ' ' || *v == '\t')) v++;
    while (e > v && (e[-1] == ' ' || e[-1] == '\t')) e--;
    *value = v;
    *vlen = (size_t)(e - v);
    return true;
}

static bool token_in(const char *v, size_t n, const char *token)
{
    size_t tl = strlen(token);
    for (size_t i = 0; i + tl <= n; i++)
        if (strncasecmp(v + i, token, tl) == 0 && (i == 0 || v[i - 1] == ',' || v[i - 1] == ' ') &&
            (i + tl == n || v[i + tl] == ',' || v[i + tl] == ' '))
            return true;
    return false;
}

/* A complete response was read. */
static void on_response(struct conn *c, int status, double t)
{
    c->waiting = false;
    n_all++;
    status_all[status]++;
    if (in_window(t)) {
        n_win++;
        status_win[status]++;
        record_latency(t - c->sent_at);
    }
}

/* Parse the responses in c->in. Sets *until_close when the response's body
 * runs to the server's close, *closing when the connection ends after the
 * response. Returns false if c failed. */
static bool on_input(struct conn *c, double t, bool eof, bool *closing)
{
    *closing = false;
    for (;;) {
        if (c->in_len == 0) return true;
        if (!c->waiting) {
            conn_fail(c, "bytes nobody asked for", 0);
            return false;
        }
        unsigned char *p = c->in;
        size_t n = c->in_len, head_len = http_head_len(p, n);
        if (head_len == 0) {
            if (n > MAX_HEAD_BYTES) { conn_fail(c, "response head too large", 0); return false; }
            if (eof) { conn_fail(c, "server closed in the middle of a response head", 0); return false; }
            return true;
        }
        /* status line */
        const char *line = (const char *)p;
        const unsigned char *eol = find_crlf(p, head_len);
        if (eol - p < 12 || strncmp(line, "HTTP/1.", 7) != 0 || line[8] != ' ' || line[9] < '1' ||
            line[9] > '9' || line[10] < '0' || line[10] > '9' || line[11] < '0' || line[11] > '9' ||
            (eol - p > 12 && line[12] != ' ')) {
            conn_fail(c, "malformed status line", 0);
            return false;
        }
        int status = (line[9] - '0') * 100 + (line[10] - '0') * 10 + (line[11] - '0');
        bool http10 = line[7] == '0';
        bool keep_alive = !http10, has_length = false, chunked = false;
        unsigned long long length = 0;
        const unsigned char *q = eol + 2;
        while (q < p + head_len - 2) {
            const unsigned char *e = find_crlf(q, (size_t)(p + head_len - q));
            const char *v;
            size_t vl;
            if (header_is((const char *)q, (size_t)(e - q), "Content-Length", &v, &vl)) {
                char tmp[32];
                if (vl == 0 || vl >= sizeof tmp) { conn_fail(c, "bad Content-Length", 0); return false; }
                memcpy(tmp, v, vl);
                tmp[vl] = 0;
                char *end;
                length = strtoull(tmp, &end, 10);
                if (*end) { conn_fail(c, "bad Content-Length", 0); return false; }
                has_length = true;
            } else if (header_is((const char *)q, (size_t)(e - q), "Transfer-Encoding", &v, &vl)) {
                chunked = token_in(v, vl, "chunked");
            } else if (header_is((const char *)q, (size_t)(e - q), "Connection", &v, &vl)) {
                if (token_in(v, vl, "close")) keep_alive = false;
                else if (token_in(v, vl, "keep-alive")) keep_alive = true;
            }
            q = e + 2;
        }
        if (status == 100) { /* interim answer: the real one follows */
            memmove(p, p + head_len, n - head_len);
            c->in_len -= head_len;
            continue;
        }
        if (status < 200) { conn_fail(c, "unexpected 1xx answer", 0); return false; }
        size_t total;
        if (head_method || status == 204 || status == 304) {
            total = head_len;
        } else if (chunked) {
            long long b = chunked_length(p + head_len, n - head_len);
            if (b < 0) { conn_fail(c, "malformed chunked body", 0); return false; }
            if (b == 0) {
                if (eof) { conn_fail(c, "server closed in the middle of a chunked body", 0); return false; }
                return true;
            }
            total = head_len + (size_t)b;
        } else if (has_length) {
            if (length > ((size_t)1 << 30)) { conn_fail(c, "body too large", 0); return false; }
            if (n - head_len < length) {
                if (eof) { conn_fail(c, "server closed in the middle of a body", 0); return false; }
                return true;
            }
            total = head_len + (size_t)length;
        } else {
            /* the body runs until the server closes */
            if (!eof) return true;
            total = n;
            keep_alive = false;
        }
        on_response(c, status, t);
        memmove(p, p + total, n - total);
        c->in_len -= total;
        if (!keep_alive) {
            *closing = true;
            return true;
        }
    }
}

/* ------------------------------------------------------------ driving ---- */
static void drive(int i, uint32_t events, double t)
{
    struct conn *c = &conns[i];
    if (c->st == ST_CONNECTING) {
        if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) return;
        int err = connect_error(c->fd);
        if (err) { conn_fail(c, "connect", err); return; }
        c->st = ST_ACTIVE;
        settled++;
        /* During the set-up phase the first request waits for the others;
         * a reopened connection goes on at once. */
        if (t_measure0 > 0 && t < t_end && !send_request(c, t)) return;
    }
    if (c->st != ST_ACTIVE) return;
    if (!conn_flush(c)) return;

    bool eof = false;
    for (;;) {
        if (c->in_cap - c->in_len < READ_CHUNK) {
            c->in_cap = c->in_cap ? c->in_cap * 2 : 2 * READ_CHUNK;
            c->in = xrealloc(c->in, c->in_cap);
        }
        ssize_t r = recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len, 0);
        if (r > 0) { c->in_len += (size_t)r; continue; }
        if (r == 0) { eof = true; break; }
        if (errno == EAGAIN || errno == EINTR) break;
        if (errno == ECONNRESET) { eof = true; break; }
        conn_fail(c, "read error", errno);
        return;
    }
    bool was_waiting = c->waiting, closing;
    if (!on_input(c, t, eof, &closing)) return;
    if (closing) {
        /* The server ends the connection after this response: open a new one. */
        conn_close(c);
        reconnects++;
        if (t < t_end) conn_start(i);
        else c->st = ST_FREE;
        return;
    }
    if (eof) {
        if (c->waiting) conn_fail(c, "server closed the connection", 0);
        else { conn_close(c); c->st = ST_FREE; } /* closed after the last answer, while draining */
        return;
    }
    if (was_waiting && !c->waiting && t_measure0 > 0 && t < t_end) send_request(c, t);
}

static void conn_start(int i)
{
    struct conn *c = &conns[i];
    c->st = ST_CONNECTING;
    c->in_len = 0;
    c->out_off = 0;
    c->waiting = false;
    const char *why = tcp_start(ep, &c->fd, &dest, 0, 0, (uint32_t)i);
    if (why) conn_fail(c, why, errno);
}

/* --------------------------------------------------------------- main ---- */
static void usage(void)
{
    fprintf(stderr, "usage: httpload [-c conns] [-d secs] [-w warmup_secs] [-m METHOD] [-b body]\n"
                    "                [-H \"Name: value\"]... http://IPv4:port/path\n");
    exit(2);
}

static void build_request(void)
{
    size_t body_len = body ? strlen(body) : 0;
    size_t cap = strlen(method) + strlen(path) + strlen(host) + body_len + 256;
    for (int i = 0; i < n_extra; i++) cap += strlen(extra_headers[i]) + 2;
    request = xrealloc(NULL, cap);
    int n = snprintf(request, cap, "%s %s HTTP/1.1\r\nHost: %s:%d\r\n", method, path, host, port);
    for (int i = 0; i < n_extra; i++) n += snprintf(request + n, cap - (size_t)n, "%s\r\n", extra_headers[i]);
    bool wants_length = body || !strcmp(method, "POST") || !strcmp(method, "PUT") || !strcmp(method, "PATCH");
    if (wants_length) n += snprintf(request + n, cap - (size_t)n, "Content-Length: %zu\r\n", body_len);
    n += snprintf(request + n, cap - (size_t)n, "\r\n");
    if (body_len) {
        memcpy(request + n, body, body_len);
        n += (int)body_len;
    }
    request_len = (size_t)n;
}

static void print_statuses(const char *name, const long long *counts)
{
    printf("\"%s\":{", name);
    bool first = true;
    for (int s = 100; s < 1000; s++) {
        if (!counts[s]) continue;
        printf("%s\"%d\":%lld", first ? "" : ",", s, counts[s]);
        first = false;
    }
    printf("}");
}

int main(int argc, char **argv)
{
    int opt;
    while ((opt = getopt(argc, argv, "c:d:w:m:b:H:")) != -1) {
        switch (opt) {
        case 'c': nconns = int_arg(optarg, 1, 100000); break;
        case 'd': secs = int_arg(optarg, 1, 86400); break;
        case 'w': warmup = int_arg(optarg, 0, 86400); break;
        case 'm':
            method = optarg;
            for (const char *m = method; *m; m++)
                if (*m < 'A' || *m > 'Z') usage();
            if (!*method) usage();
            break;
        case 'b': body = optarg; break;
        case 'H':
            if (n_extra == MAX_HEADERS || !strchr(optarg, ':') || strpbrk(optarg, "\r\n")) usage();
            extra_headers[n_extra++] = optarg;
            break;
        default: usage();
        }
    }
    if (optind != argc - 1) usage();
    if (!method) method = body ? "POST" : "GET";
    head_method = !strcmp(method, "HEAD");

    const char *url = argv[optind], *rest;
    if (strncmp(url, "http://", 7) != 0) usage();
    if (!(rest = parse_hostport(url + 7, host, sizeof host, &port))) usage();
    if (*rest == '/') {
        if (!path_ok(rest, sizeof path)) usage();
        snprintf(path, sizeof path, "%s", rest);
    }
    if (!ipv4_addr(&dest, host, port)) return 2;
    build_request();

    signal(SIGPIPE, SIG_IGN);
    conns = calloc((size_t)nconns, sizeof *conns);
    if (!conns) { fprintf(stderr, "httpload: out of memory\n"); return 1; }
    ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) { perror("httpload: epoll_create1"); return 1; }

    const double t0 = now();
    double cpu_start = 0, cpu_end = -1;
    for (int i = 0; i < nconns; i++) conn_start(i);

    struct epoll_event evs[1024];
    for (;;) {
        double t = now();
        if (t_measure0 == 0) {
            if (settled >= nconns) {
                /* Every connection settled: the warm-up starts. */
                t_measure0 = t + warmup;
                t_end = t_measure0 + secs;
                for (int i = 0; i < nconns; i++)
                    if (conns[i].st == ST_ACTIVE) send_request(&conns[i], t);
            } else if (t - t0 > SETUP_TIMEOUT_S) {
                fprintf(stderr, "httpload: timed out opening connections (%d of %d settled)\n", settled, nconns);
                errors++;
                break;
            }
        }
        if (t_measure0 > 0 && cpu_start == 0 && t >= t_measure0) cpu_start = cpu_seconds();
        if (t_end > 0 && t >= t_end) {
            if (cpu_end < 0) cpu_end = cpu_seconds();
            bool busy = false;
            for (int i = 0; i < nconns && !busy; i++)
                busy = conns[i].st == ST_CONNECTING || (conns[i].st == ST_ACTIVE && conns[i].waiting);
            if (!busy) break;
            if (t >= t_end + DRAIN_S) {
                fprintf(stderr, "httpload: requests still in flight %.0f s after the window\n", DRAIN_S);
                break;
            }
        }
        bool alive = false;
        for (int i = 0; i < nconns && !alive; i++) alive = conns[i].st == ST_CONNECTING || conns[i].st == ST_ACTIVE;
        if (!alive && t_measure0 > 0 && t < t_end) {
            fprintf(stderr, "httpload: every connection failed\n");
            break;
        }

        int n = epoll_wait(ep, evs, (int)(sizeof evs / sizeof evs[0]), 50);
        if (n < 0) {
            if (errno == EINTR) continue;
            perror("httpload: epoll_wait");
            break;
        }
        t = now();
        for (int k = 0; k < n; k++) {
            int i = (int)evs[k].data.u32;
            if (conns[i].st == ST_CONNECTING || conns[i].st == ST_ACTIVE) drive(i, evs[k].events, t);
        }
    }

    double t_stop = now();
    if (cpu_end < 0) cpu_end = cpu_seconds();
    /* The window may have been cut short by failures. */
    double measured = t_measure0 > 0 ? (t_stop < t_end ? t_stop : t_end) - t_measure0 : 0;
    if (measured < 0) measured = 0;
    double cpu_pct = measured >= 0.1 && cpu_start > 0 ? 100.0 * (cpu_end - cpu_start) / measured : 0;
    u32s_sort(&lat);

    printf("{\"url\":\"http://%s:%d%s\",\"method\":\"%s\",\"conns\":%d,\"secs\":%d,\"warmup_secs\":%d,"
           "\"body_bytes\":%zu,\"requests\":%lld,\"requests_per_s\":%.0f,",
           host, port, path, method, nconns, secs, warmup, body ? strlen(body) : 0, n_win,
           measured > 0 ? (double)n_win / measured : 0.0);
    print_statuses("statuses", status_win);
    printf(",\"p50_us\":%u,\"p90_us\":%u,\"p99_us\":%u,\"p999_us\":%u,\"max_us\":%u,", u32s_pct(&lat, 0.5),
           u32s_pct(&lat, 0.9), u32s_pct(&lat, 0.99), u32s_pct(&lat, 0.999), u32s_max(&lat));
    printf("\"requests_total\":%lld,", n_all);
    print_statuses("statuses_total", status_all);
    printf(",\"reconnects\":%lld,\"connect_fail\":%lld,\"errors\":%lld,\"cpu_pct\":%.0f}\n", reconnects,
           connect_fail, errors, cpu_pct);
    fflush(stdout);
    return errors > 0 || n_all == 0 ? 1 : 0;
}
