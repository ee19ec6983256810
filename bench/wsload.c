/*
 * wsload: the project's epoll-driven WebSocket (RFC 6455) load generator,
 * for plain ws:// and for wss:// (OpenSSL). bench/run.sh and bench/run-tls.sh
 * build it themselves (see build_loadgen in bench/lib.sh), so the benchmarks
 * need nothing outside the repository:
 *
 *   cc -O2 -Wall -Wextra -o /tmp/wsload bench/wsload.c -lssl -lcrypto
 *
 *   wsload [options] ws://127.0.0.1:PORT/path | wss://127.0.0.1:PORT/path
 *     -m echo   closed loop: every connection keeps -p messages of -s bytes
 *               in flight, checks every echo byte for byte, and reports
 *               messages/s and round-trip latency percentiles
 *     -m idle   open -c connections, print "READY <open>" on its own line,
 *               hold them for -d seconds (answering pings), then exit
 *     -m churn  keep -c connection cycles in flight for -d seconds; one
 *               cycle = TCP connect, (wss://: a full TLS handshake,) HTTP
 *               upgrade (101 and Sec-WebSocket-Accept checked), client close
 *               frame 1000, server's close frame received, (wss://:
 *               close_notify,) close(); reports cycles/s completed inside
 *               the window (handshakes_per_s) and cycle latency percentiles;
 *               afterwards the cycles in flight may finish (up to 2 s) but
 *               are not counted in the rate (cycles_total counts every
 *               completed cycle). `-m handshake` is the same mode under the
 *               name the wss:// harness first used for it
 *     -c N   connections (echo, idle) or cycles in flight (churn)      [100]
 *     -d S   seconds to measure (echo, churn) or to hold (idle)         [10]
 *     -s B   message size in bytes (echo)                               [64]
 *     -p D   messages in flight per connection (echo, 1..64)            [1]
 *     -b     binary messages instead of text (echo)
 *     -S N   bind sources 127.0.0.2 .. 127.0.0.(N+1), round robin, so many
 *            connections do not run out of ephemeral ports              [off]
 *     -k N   connection set-ups in flight at once (echo, idle)          [256]
 *     -z     offer "permessage-deflate; client_max_window_bits" and count
 *            how many servers' answers accept it (the answer is checked
 *            against RFC 7692). Nothing is ever sent compressed, and a
 *            compressed frame from the server is an error, so -z is refused
 *            in echo mode
 *     -r     churn mode over wss://: resume the TLS session of the previous
 *            cycle (default: never resume, every handshake is a full one)
 *     -B     browser headers: the upgrade request carries, besides the
 *            handshake's own headers, the ones Chromium sends with a
 *            WebSocket upgrade, in Chromium's order: Pragma: no-cache,
 *            Cache-Control: no-cache, a Chrome-on-Linux User-Agent, Origin:
 *            http://HOST:PORT (https:// over wss://; without -B the Origin is
 *            http(s)://localhost), Accept-Encoding: gzip, deflate, br, zstd
 *            and Accept-Language: en-US,en;q=0.9 (about 420 bytes instead
 *            of about 180). Sec-WebSocket-Extensions is still sent only
 *            with -z. Any mode
 *
 * Output: one JSON line on stdout (plus the READY line in idle mode), with
 * cpu_pct = this process's own CPU use (user + system, % of one core) during
 * the measured window. The first few failures are described on stderr.
 *
 * Over wss:// certificate verification is deliberately OFF
 * (SSL_VERIFY_NONE): the benchmark runs against a throw-away self-signed
 * certificate on the loopback interface and measures cost, not trust. Never
 * reuse this client against anything that matters.
 */
#define _GNU_SOURCE
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <signal.h>

#define PROG "wsload"
#include "wsbench.h"

#define MAX_DEPTH 64
#define READ_CHUNK 16384
#define MAX_LOGGED_FAILURES 5
#define SETUP_TIMEOUT_S 120.0
#define ECHO_DRAIN_S 0.5
#define HS_DRAIN_S 2.0

enum mode { M_ECHO, M_IDLE, M_CHURN };

enum state {
    ST_FREE,      /* slot unused */
    ST_TCP,       /* non-blocking connect() in progress */
    ST_TLS,       /* SSL_connect() in progress */
    ST_UPGRADE,   /* request sent (or queued), waiting for the 101 */
    ST_OPEN,      /* WebSocket open */
    ST_CLOSING,   /* churn mode: our close frame sent, waiting for the server's */
};

struct conn {
    int fd;
    enum state st;
    SSL *ssl;
    struct buf in, out;      /* plaintext received / plaintext still to send */
    char accept[32];         /* expected Sec-WebSocket-Accept */
    double t_start;          /* when connect() was issued */
    double sent_at[MAX_DEPTH];
    unsigned head, inflight; /* ring of send times of messages in flight */
    size_t msg_off;          /* bytes of the current (fragmented) message seen */
    bool msg_ok, in_msg;
};

/* ------------------------------------------------------------ options ---- */
static enum mode mode = M_ECHO;
static int nconns = 100, secs = 10, msg_size = 64, depth = 1, nsrc = 0, max_setup = 256;
static bool binary, offer_deflate, resume, browser_headers;
static bool use_tls = true;
static char host[64] = "127.0.0.1", path[1024] = "/";
static int port;
static struct sockaddr_in dest;

/* -------------------------------------------------------------- state ---- */
static SSL_CTX *ctx;
static SSL_SESSION *saved_session; /* -r: the most recent resumable session */
static struct conn *conns;
static int ep;
static unsigned char *payload;
static uint64_t rng_state;

static struct {
    long long upgraded;      /* successful upgrades (101 checked) */
    long long open_now;      /* connections currently open */
    long long connect_fail;  /* TCP, TLS or upgrade failures */
    long long errors;        /* failures after the upgrade */
    long long bad_echo;      /* echoes that differ from what was sent */
    long long msgs;          /* echoes received inside the measured window */
    long long cycles;        /* churn mode: cycles completed in the window */
    long long cycles_total;  /* churn mode: all cycles completed, drain included */
    long long resumed;       /* TLS handshakes that resumed a session */
    long long deflate;       /* upgrades that negotiated permessage-deflate */
    int logged;
} st;

static struct u32s lat;
static char tls_version[32] = "", tls_cipher[64] = "", alpn[32] = "", deflate_answer[256] = "";

/* --------------------------------------------------------------- util ---- */
/* Masking keys only have to be unknown to intermediaries ahead of time; a
 * seeded xorshift is plenty for a load generator. */
static uint32_t rnd32(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 16);
}

static void record_latency(double seconds)
{
    double us = seconds * 1e6;
    u32s_push(&lat, us > 4e9 ? UINT32_MAX : (uint32_t)us, (size_t)1 << 16);
}

static void log_openssl_errors(void)
{
    unsigned long e;
    char msg[256];
    while ((e = ERR_get_error()) != 0) {
        ERR_error_string_n(e, msg, sizeof msg);
        fprintf(stderr, "wsload:   %s\n", msg);
    }
}

/* ------------------------------------------------------ connection life ---- */
static void conn_release(struct conn *c)
{
    if (c->ssl) {
        SSL_free(c->ssl);
        c->ssl = NULL;
    }
    if (c->fd >= 0) close(c->fd);
    /* A slot's buffers are kept for its next connection: freeing them made
     * glibc trim and regrow its heap, and churn paid a page fault or two
     * per cycle on the load generator's core (up to 15% of it). */
    c->in.off = c->in.len = 0;
    c->out.off = c->out.len = 0;
    if (c->st == ST_OPEN || c->st == ST_CLOSING) st.open_now--;
    c->fd = -1;
    c->st = ST_FREE;
}

/* Count and (for the first few) describe a failure, then drop the connection.
 * In churn mode the slot immediately starts the next cycle. */
static void conn_fail(struct conn *c, const char *why, int saved_errno)
{
    bool before_open = c->st == ST_TCP || c->st == ST_TLS || c->st == ST_UPGRADE;
    if (before_open) st.connect_fail++;
    else st.errors++;
    if (st.logged < MAX_LOGGED_FAILURES) {
        st.logged++;
        log_failure("connection", (int)(c - conns), before_open, why, saved_errno);
        log_openssl_errors();
    }
    ERR_clear_error();
    conn_release(c);
}

/* ---------------------------------------------------------- transport ---- */
/* Result of one transport call. */
enum io { IO_OK, IO_AGAIN, IO_EOF, IO_ERR };

static enum io ssl_result(struct conn *c, int r)
{
    switch (SSL_get_error(c->ssl, r)) {
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE:
        return IO_AGAIN;
    case SSL_ERROR_ZERO_RETURN: /* close_notify, or (with IGNORE_UNEXPECTED_EOF) plain EOF */
        return IO_EOF;
    case SSL_ERROR_SYSCALL:
        return (errno == 0 || errno == ECONNRESET || errno == EPIPE) ? IO_EOF : IO_ERR;
    default:
        return IO_ERR;
    }
}

static enum io t_recv(struct conn *c, void *p, size_t n, size_t *got)
{
    if (c->ssl) {
        ERR_clear_error();
        errno = 0;
        int r = SSL_read(c->ssl, p, n > INT32_MAX ? INT32_MAX : (int)n);
        if (r > 0) { *got = (size_t)r; return IO_OK; }
        return ssl_result(c, r);
    }
    ssize_t r = recv(c->fd, p, n, 0);
    if (r > 0) { *got = (size_t)r; return IO_OK; }
    if (r == 0) return IO_EOF;
    if (errno == EAGAIN || errno == EINTR) return IO_AGAIN;
    return errno == ECONNRESET ? IO_EOF : IO_ERR;
}

static enum io t_send(struct conn *c, const void *p, size_t n, size_t *put)
{
    if (c->ssl) {
        ERR_clear_error();
        errno = 0;
        int r = SSL_write(c->ssl, p, n > INT32_MAX ? INT32_MAX : (int)n);
        if (r > 0) { *put = (size_t)r; return IO_OK; }
        return ssl_result(c, r);
    }
    ssize_t r = send(c->fd, p, n, MSG_NOSIGNAL);
    if (r >= 0) { *put = (size_t)r; return IO_OK; }
    if (errno == EAGAIN || errno == EINTR) return IO_AGAIN;
    return errno == ECONNRESET || errno == EPIPE ? IO_EOF : IO_ERR;
}

/* Write out as much of c->out as the socket takes. False if c was dropped. */
static bool conn_flush(struct conn *c)
{
    while (c->out.off < c->out.len) {
        size_t put = 0;
        enum io r = t_send(c, c->out.p + c->out.off, c->out.len - c->out.off, &put);
        if (r == IO_AGAIN) return true;
        if (r != IO_OK) {
            conn_fail(c, r == IO_EOF ? "peer closed while we were writing" : "write error", errno);
            return false;
        }
        c->out.off += put;
    }
    c->out.off = c->out.len = 0;
    return true;
}

/* Read everything available into c->in. Sets *eof when the peer is done.
 * A plain socket that fills less than the room offered is drained: the next
 * byte brings a new edge, so no second recv is spent learning EAGAIN (which
 * would make this client cost more per message than the servers it loads).
 * Once the peer has hung up no edge is left to come: then read to the end. */
static bool conn_fill(struct conn *c, uint32_t events, bool *eof)
{
    *eof = false;
    const bool to_end = c->ssl || (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR));
    for (;;) {
        buf_reserve(&c->in, READ_CHUNK);
        size_t room = c->in.cap - c->in.len, got = 0;
        enum io r = t_recv(c, c->in.p + c->in.len, room, &got);
        if (r == IO_OK) {
            c->in.len += got;
            if (got < room && !to_end) return true;
            continue;
        }
        if (r == IO_AGAIN) return true;
        if (r == IO_EOF) { *eof = true; return true; }
        conn_fail(c, "read error", errno);
        return false;
    }
}

/* ------------------------------------------------------------- frames ---- */
static void send_frame(struct conn *c, int opcode, const unsigned char *data, size_t n)
{
    ws_put_frame(&c->out, opcode, data, n, rnd32());
}

static void send_message(struct conn *c)
{
    send_frame(c, binary ? 2 : 1, payload, (size_t)msg_size);
    c->sent_at[(c->head + c->inflight) % MAX_DEPTH] = now();
    c->inflight++;
}

/* A complete (possibly reassembled) data message has been checked. */
static void on_echo(struct conn *c, bool ok, bool counting, double t)
{
    if (!ok) st.bad_echo++;
    if (c->inflight == 0) { st.bad_echo++; return; } /* an echo we never asked for */
    double sent = c->sent_at[c->head];
    c->head = (c->head + 1) % MAX_DEPTH;
    c->inflight--;
    if (counting) {
        st.msgs++;
        record_latency(t - sent);
    }
}

/* Parse the frames in c->in. Returns false if c was dropped (or, in
 * churn mode, finished and recycled). */
static bool on_frames(struct conn *c, bool counting, double t)
{
    for (;;) {
        unsigned char *p = c->in.p + c->in.off;
        size_t avail = c->in.len - c->in.off;
        struct ws_head f;
        const char *why;
        int r = ws_next_frame(p, avail, (uint64_t)64 << 20, &f, &why);
        if (r == 0) break;
        if (r < 0) {
            if (!f.masked && f.rsv && st.deflate) why = "server sent a compressed frame (wsload cannot inflate)";
            conn_fail(c, why, 0);
            return false;
        }
        bool fin = f.fin;
        int op = f.op;
        uint64_t n = f.len;
        const unsigned char *data = p + f.hl;
        c->in.off += f.hl + (size_t)n;

        switch (op) {
        case 0: case 1: case 2:
            if ((op == 0) != c->in_msg) { conn_fail(c, "bad fragmentation", 0); return false; }
            if (op != 0) {
                c->in_msg = true;
                c->msg_off = 0;
                c->msg_ok = (op == 2) == binary;
            }
            if (c->msg_off + n > (uint64_t)msg_size || memcmp(data, payload + c->msg_off, (size_t)n) != 0)
                c->msg_ok = false;
            else
                c->msg_off += (size_t)n;
            if (fin) {
                c->in_msg = false;
                on_echo(c, c->msg_ok && c->msg_off == (size_t)msg_size, counting, t);
            }
            break;
        case 8:
            if (c->st == ST_CLOSING) { /* churn mode: the cycle is complete */
                return false;
            } else {
                char reason[64];
                ws_close_why(reason, sizeof reason, data, n);
                conn_fail(c, reason, 0);
                return false;
            }
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
    if (c->in.off == c->in.len) {
        c->in.off = c->in.len = 0;
        if (mode == M_IDLE) buf_free(&c->in); /* idle connections hold no buffer */
    }
    return true;
}

/* ------------------------------------------------------------ upgrade ---- */
static void queue_upgrade(struct conn *c)
{
    unsigned char key[16];
    char key64[32];
    for (int i = 0; i < 16; i += 4) {
        uint32_t r = rnd32();
        memcpy(key + i, &r, 4);
    }
    EVP_EncodeBlock((unsigned char *)key64, key, 16);
    ws_accept_of(key64, strlen(key64), c->accept);

    static const char ext_offer[] = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n";
    char req[2048];
    int n;
    if (browser_headers) {
        /* What Chromium sends (-B), in its order; see the header comment. */
        n = snprintf(req, sizeof req,
                     "GET %s HTTP/1.1\r\n"
                     "Host: %s:%d\r\n"
                     "Connection: Upgrade\r\n"
                     "Pragma: no-cache\r\n"
                     "Cache-Control: no-cache\r\n"
                     "User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
                     "Chrome/126.0.0.0 Safari/537.36\r\n"
                     "Upgrade: websocket\r\n"
                     "Origin: %s://%s:%d\r\n"
                     "Sec-WebSocket-Version: 13\r\n"
                     "Accept-Encoding: gzip, deflate, br, zstd\r\n"
                     "Accept-Language: en-US,en;q=0.9\r\n"
                     "Sec-WebSocket-Key: %s\r\n"
                     "%s"
                     "\r\n",
                     path, host, port, use_tls ? "https" : "http", host, port, key64,
                     offer_deflate ? ext_offer : "");
    } else {
        n = snprintf(req, sizeof req,
                     "GET %s HTTP/1.1\r\n"
                     "Host: %s:%d\r\n"
                     "Upgrade: websocket\r\n"
                     "Connection: Upgrade\r\n"
                     "Sec-WebSocket-Key: %s\r\n"
                     "Sec-WebSocket-Version: 13\r\n"
                     "%s"
                     "Origin: %s://localhost\r\n"
                     "\r\n",
                     path, host, port, key64, offer_deflate ? ext_offer : "", use_tls ? "https" : "http");
    }
    if (n < 0 || (size_t)n >= sizeof req) { /* cannot happen: path < 1024, host < 64 */
        fprintf(stderr, "wsload: upgrade request too long\n");
        exit(1);
    }
    buf_put(&c->out, req, (size_t)n);
    c->st = ST_UPGRADE;
}

static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t') s++;
    char *e = s + strlen(s);
    while (e > s && (e[-1] == ' ' || e[-1] == '\t')) *--e = 0;
    return s;
}

static bool window_bits_ok(const char *v)
{
    char *end;
    long b = strtol(v, &end, 10);
    return *v && !*end && b >= 8 && b <= 15;
}

/* Check a Sec-WebSocket-Extensions answer to our one permessage-deflate
 * offer (RFC 7692 section 7.1): one extension, known parameters only, each at
 * most once, window bits 8..15. */
static bool deflate_answer_ok(const char *value)
{
    char v[512];
    if (strlen(value) >= sizeof v || strchr(value, ',')) return false;
    strcpy(v, value);
    char *save = NULL, *tok = strtok_r(v, ";", &save);
    if (!tok || strcasecmp(trim(tok), "permessage-deflate") != 0) return false;
    static const char *const names[] = {"server_no_context_takeover", "client_no_context_takeover",
                                        "server_max_window_bits", "client_max_window_bits"};
    unsigned seen = 0;
    while ((tok = strtok_r(NULL, ";", &save)) != NULL) {
        char *eq = strchr(tok, '='), *val = NULL;
        if (eq) { *eq = 0; val = trim(eq + 1); }
        char *name = trim(tok);
        int k = -1;
        for (int i = 0; i < 4; i++)
            if (strcasecmp(name, names[i]) == 0) k = i;
        if (k < 0 || (seen & (1u << k))) return false;
        seen |= 1u << k;
        if (k < 2 && val) return false;
        if (k >= 2) {
            if (!val) return false;
            if (*val == '"' && strlen(val) >= 2 && val[strlen(val) - 1] == '"') { /* quoted-string form */
                val[strlen(val) - 1] = 0;
                val++;
            }
            if (!window_bits_ok(val)) return false;
        }
    }
    return true;
}

/* Parse the upgrade answer once its head is complete. */
static bool on_upgrade_answer(struct conn *c, bool *done)
{
    *done = false;
    unsigned char *p = c->in.p + c->in.off;
    size_t avail = c->in.len - c->in.off;
    size_t head_len = http_head_len(p, avail);
    if (head_len == 0) {
        if (avail > 16384) { conn_fail(c, "upgrade answer too long", 0); return false; }
        return true;
    }
    char *head = xrealloc(NULL, head_len + 1);
    memcpy(head, p, head_len);
    head[head_len] = 0;
    c->in.off += head_len;

    const char *why = NULL;
    bool upgrade = false, accept_ok = false, has_ext = false, ext_ok = false;
    char ext_value[256] = "";
    char *save = NULL, *line = strtok_r(head, "\r\n", &save);
    if (!line || strncmp(line, "HTTP/1.1 101", 12) != 0) {
        why = "no 101 Switching Protocols";
    } else {
        while ((line = strtok_r(NULL, "\r\n", &save)) != NULL) {
            char *colon = strchr(line, ':');
            if (!colon) continue;
            *colon = 0;
            char *name = trim(line), *value = trim(colon + 1);
            if (strcasecmp(name, "Upgrade") == 0) {
                upgrade = strcasecmp(value, "websocket") == 0;
            } else if (strcasecmp(name, "Sec-WebSocket-Accept") == 0) {
                accept_ok = strcmp(value, c->accept) == 0;
            } else if (strcasecmp(name, "Sec-WebSocket-Extensions") == 0) {
                if (has_ext) ext_ok = false; /* more than one header: reject */
                else ext_ok = deflate_answer_ok(value);
                has_ext = true;
                snprintf(ext_value, sizeof ext_value, "%s", value);
            }
        }
        if (!upgrade) why = "no Upgrade: websocket";
        else if (!accept_ok) why = "missing or wrong Sec-WebSocket-Accept";
        else if (has_ext && !offer_deflate) why = "extension answered that we never offered";
        else if (has_ext && !ext_ok) why = "invalid permessage-deflate answer";
    }
    free(head);
    if (why) { conn_fail(c, why, 0); return false; }

    c->st = ST_OPEN;
    st.upgraded++;
    st.open_now++;
    if (has_ext) {
        st.deflate++;
        if (!deflate_answer[0]) {
            /* keep it JSON-safe */
            for (char *q = ext_value; *q; q++)
                if (*q == '"' || *q == '\\' || (unsigned char)*q < 0x20) *q = '?';
            snprintf(deflate_answer, sizeof deflate_answer, "%s", ext_value);
        }
    }
    *done = true;
    return true;
}

/* ------------------------------------------------------------ driving ---- */
static double t_measure0, t_end; /* measured window (0 until it starts) */

static bool in_window(double t) { return t_measure0 > 0 && t >= t_measure0 && t < t_end; }

static void note_tls_details(SSL *ssl)
{
    if (tls_version[0]) return;
    snprintf(tls_version, sizeof tls_version, "%s", SSL_get_version(ssl));
    snprintf(tls_cipher, sizeof tls_cipher, "%s", SSL_get_cipher_name(ssl));
    const unsigned char *proto = NULL;
    unsigned len = 0;
    SSL_get0_alpn_selected(ssl, &proto, &len);
    if (proto && len < sizeof alpn) {
        memcpy(alpn, proto, len);
        alpn[len] = 0;
    }
}

/* Churn mode: a cycle finished cleanly (the server's close frame came). */
static void cycle_done(int i, double t)
{
    struct conn *c = &conns[i];
    st.cycles_total++;
    if (in_window(t)) {
        st.cycles++;
        record_latency(t - c->t_start);
    }
    if (c->ssl) {
        if (SSL_session_reused(c->ssl)) st.resumed++;
        if (resume) {
            SSL_SESSION *s = SSL_get1_session(c->ssl);
            if (s && SSL_SESSION_is_resumable(s)) {
                if (saved_session) SSL_SESSION_free(saved_session);
                saved_session = s;
            } else if (s) {
                SSL_SESSION_free(s);
            }
        }
        ERR_clear_error();
        SSL_shutdown(c->ssl); /* one close_notify; we do not wait for the server's */
        ERR_clear_error();
    }
    conn_release(c);
}

/* Advance connection i as far as it goes after an epoll event. */
static void drive(int i, uint32_t events, double t)
{
    struct conn *c = &conns[i];

    if (c->st == ST_TCP) {
        if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) return;
        int err = connect_error(c->fd);
        if (err) { conn_fail(c, "connect", err); return; }
        if (!use_tls) {
            queue_upgrade(c);
        } else {
            c->ssl = SSL_new(ctx);
            if (!c->ssl || !SSL_set_fd(c->ssl, c->fd)) { conn_fail(c, "SSL_new", 0); return; }
            SSL_set_connect_state(c->ssl);
            if (resume && saved_session) SSL_set_session(c->ssl, saved_session);
            c->st = ST_TLS;
        }
    }
    if (c->st == ST_TLS) {
        ERR_clear_error();
        errno = 0;
        int r = SSL_connect(c->ssl);
        if (r != 1) {
            enum io res = ssl_result(c, r);
            if (res == IO_AGAIN) return;
            conn_fail(c, res == IO_EOF ? "TLS handshake: server closed" : "TLS handshake failed", errno);
            return;
        }
        note_tls_details(c->ssl);
        queue_upgrade(c);
    }

    if (!conn_flush(c)) return;
    bool eof = false;
    if (!conn_fill(c, events, &eof)) return;

    if (c->st == ST_UPGRADE) {
        bool done;
        if (!on_upgrade_answer(c, &done)) return;
        if (done) {
            if (mode == M_CHURN) {
                static const unsigned char normal[2] = {0x03, 0xe8}; /* 1000 */
                send_frame(c, 8, normal, 2);
                c->st = ST_CLOSING;
            } else if (mode == M_ECHO && t_measure0 > 0 && t < t_end) {
                while (c->inflight < (unsigned)depth) send_message(c);
            }
        }
    }
    if (c->st == ST_OPEN || c->st == ST_CLOSING) {
        bool closing = c->st == ST_CLOSING;
        if (!on_frames(c, in_window(t), t)) {
            if (closing && c->st == ST_CLOSING) cycle_done(i, t);
            return;
        }
        if (mode == M_ECHO && in_window(t))
            while (c->inflight < (unsigned)depth) send_message(c);
    }
    if (eof) {
        conn_fail(c, "server closed the connection", 0);
        return;
    }
    conn_flush(c);
}

static void conn_start(int i)
{
    struct conn *c = &conns[i];
    struct buf in = c->in, out = c->out; /* kept from the slot's last connection */
    memset(c, 0, sizeof *c);
    c->in = in;
    c->out = out;
    c->st = ST_TCP;
    c->t_start = now();
    const char *why = tcp_start(ep, &c->fd, &dest, nsrc, i, (uint32_t)i);
    if (why) conn_fail(c, why, errno);
}

/* --------------------------------------------------------------- main ---- */
static void usage(void)
{
    fprintf(stderr,
            "usage: wsload [-m echo|idle|churn] [-c conns] [-d secs] [-s bytes] [-p depth] [-b]\n"
            "              [-S sources] [-k setups] [-z] [-r] [-B] ws://IPv4:port/path | wss://IPv4:port/path\n");
    exit(2);
}

static bool setup_tls(void)
{
    ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) return false;
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    /* No certificate verification: see the header comment. */
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                              SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
    /* Without -r no session is ever offered back, so each handshake is full. */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    static const unsigned char protos[] = "\x08http/1.1";
    return SSL_CTX_set_alpn_protos(ctx, protos, sizeof protos - 1) == 0;
}

int main(int argc, char **argv)
{
    int opt;
    while ((opt = getopt(argc, argv, "m:c:d:s:p:bS:k:zrB")) != -1) {
        switch (opt) {
        case 'm':
            if (!strcmp(optarg, "echo")) mode = M_ECHO;
            else if (!strcmp(optarg, "idle")) mode = M_IDLE;
            else if (!strcmp(optarg, "churn") || !strcmp(optarg, "handshake")) mode = M_CHURN;
            else usage();
            break;
        case 'c': nconns = int_arg(optarg, 1, 1000000); break;
        case 'd': secs = int_arg(optarg, 1, 86400); break;
        case 's': msg_size = int_arg(optarg, 0, 16 << 20); break;
        case 'p': depth = int_arg(optarg, 1, MAX_DEPTH); break;
        case 'b': binary = true; break;
        case 'S': nsrc = int_arg(optarg, 0, 250); break;
        case 'k': max_setup = int_arg(optarg, 1, 1000000); break;
        case 'z': offer_deflate = true; break;
        case 'r': resume = true; break;
        case 'B': browser_headers = true; break;
        default: usage();
        }
    }
    if (optind != argc - 1) usage();
    const char *url = argv[optind], *rest;
    if (!strncmp(url, "wss://", 6)) { use_tls = true; rest = url + 6; port = 443; }
    else if (!strncmp(url, "ws://", 5)) { use_tls = false; rest = url + 5; port = 80; }
    else usage();
    if (!(rest = parse_hostport(rest, host, sizeof host, &port))) usage();
    if (*rest == '/') snprintf(path, sizeof path, "%s", rest);
    if (!ipv4_addr(&dest, host, port)) return 2;
    if (offer_deflate && mode == M_ECHO) {
        fprintf(stderr, "wsload: -z cannot be used in echo mode (wsload does not inflate)\n");
        return 2;
    }

    signal(SIGPIPE, SIG_IGN);
    if (use_tls && !setup_tls()) {
        fprintf(stderr, "wsload: cannot set up the TLS client context\n");
        log_openssl_errors();
        return 1;
    }
    if (RAND_bytes((unsigned char *)&rng_state, sizeof rng_state) != 1 || rng_state == 0)
        rng_state = (uint64_t)time(NULL) * 2654435761u ^ (uint64_t)getpid();
    payload = xrealloc(NULL, (size_t)msg_size + 1);
    for (int i = 0; i < msg_size; i++) payload[i] = (unsigned char)('a' + i % 26);
    conns = calloc((size_t)nconns, sizeof *conns);
    if (!conns) { fprintf(stderr, "wsload: out of memory\n"); return 1; }
    for (int i = 0; i < nconns; i++) conns[i].fd = -1;
    ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) { perror("wsload: epoll_create1"); return 1; }

    const double t0 = now();
    double t_ready = 0, cpu_start = 0, cpu_end = -1;
    int started = 0;
    struct epoll_event evs[1024];

    if (mode == M_CHURN) {
        t_measure0 = t0;
        t_end = t0 + secs;
        cpu_start = cpu_seconds();
        for (int i = 0; i < nconns; i++) conn_start(i);
        started = nconns;
    }

    for (;;) {
        double t = now();
        if (mode != M_CHURN && t_ready == 0) {
            /* set-up phase: keep at most max_setup connections opening */
            long long settled = st.upgraded + st.connect_fail;
            while (started < nconns && started - settled < max_setup) {
                conn_start(started++);
                settled = st.upgraded + st.connect_fail;
            }
            if (settled >= nconns) {
                t_ready = now();
                if (mode == M_IDLE) {
                    printf("READY %lld\n", st.open_now);
                    fflush(stdout);
                }
                t_measure0 = t_ready;
                t_end = t_ready + secs;
                cpu_start = cpu_seconds();
                if (mode == M_ECHO) {
                    for (int i = 0; i < nconns; i++) {
                        struct conn *c = &conns[i];
                        if (c->st != ST_OPEN) continue;
                        while (c->inflight < (unsigned)depth) send_message(c);
                        conn_flush(c);
                    }
                }
            } else if (t - t0 > SETUP_TIMEOUT_S) {
                fprintf(stderr, "wsload: timed out opening connections (%lld of %d settled)\n", settled, nconns);
                break;
            }
        }
        if (t_end > 0 && t >= t_end && cpu_end < 0) cpu_end = cpu_seconds();
        if (mode == M_CHURN && t >= t_end) {
            /* no new cycles; let those in flight finish (up to HS_DRAIN_S) */
            bool busy = false;
            for (int i = 0; i < nconns && !busy; i++) busy = conns[i].st != ST_FREE;
            if (!busy || t >= t_end + HS_DRAIN_S) break;
        } else if (t_end > 0 && t >= t_end + (mode == M_ECHO ? ECHO_DRAIN_S : 0)) {
            break;
        }

        int n = epoll_wait(ep, evs, (int)(sizeof evs / sizeof evs[0]), 50);
        if (n < 0) {
            if (errno == EINTR) continue;
            perror("wsload: epoll_wait");
            break;
        }
        t = now();
        for (int k = 0; k < n; k++) {
            int i = (int)evs[k].data.u32;
            if (conns[i].st == ST_FREE) continue;
            drive(i, evs[k].events, t);
            /* churn mode: a slot that finished or failed starts the next cycle */
            if (mode == M_CHURN && conns[i].st == ST_FREE && t < t_end) conn_start(i);
        }
        if (mode == M_CHURN && t < t_end) {
            /* slots that failed inside conn_start() itself */
            for (int i = 0; i < nconns; i++)
                if (conns[i].st == ST_FREE) conn_start(i);
        }
    }

    double measured = t_end > t_measure0 ? t_end - t_measure0 : 0;
    if (cpu_end < 0) cpu_end = cpu_seconds();
    double cpu_pct = measured > 0 ? 100.0 * (cpu_end - cpu_start) / measured : 0;
    u32s_sort(&lat);
    static const char *const names[] = {"echo", "idle", "churn"};
    long long open_at_end = st.open_now;
    printf("{\"mode\":\"%s\",\"tls\":%s,\"tls_version\":\"%s\",\"cipher\":\"%s\",\"alpn\":\"%s\","
           "\"conns\":%d,\"open\":%lld,\"open_at_end\":%lld,\"connect_s\":%.3f,"
           "\"size\":%d,\"depth\":%d,\"msgs\":%lld,\"msgs_per_s\":%.0f,",
           names[mode], use_tls ? "true" : "false", tls_version, tls_cipher, alpn,
           nconns, st.upgraded, open_at_end,
           (t_ready > 0 ? t_ready : now()) - t0, msg_size, depth, st.msgs,
           mode == M_ECHO && measured > 0 ? (double)st.msgs / measured : 0.0);
    printf("\"handshakes\":%lld,\"cycles_total\":%lld,\"handshakes_per_s\":%.0f,\"resumed\":%lld,",
           mode == M_CHURN ? st.cycles : st.upgraded, st.cycles_total,
           mode == M_CHURN && measured > 0 ? (double)st.cycles / measured : 0.0, st.resumed);
    printf("\"cpu_pct\":%.0f,", cpu_pct);
    printf("\"p50_us\":%u,\"p99_us\":%u,\"p999_us\":%u,", u32s_pct(&lat, 0.5), u32s_pct(&lat, 0.99), u32s_pct(&lat, 0.999));
    printf("\"deflate_offered\":%s,\"deflate_negotiated\":%lld,\"deflate_answer\":\"%s\","
           "\"bad_echo\":%lld,\"connect_fail\":%lld,\"errors\":%lld}\n",
           offer_deflate ? "true" : "false", st.deflate, deflate_answer, st.bad_echo, st.connect_fail,
           st.errors);
    fflush(stdout);
    return 0;
}
