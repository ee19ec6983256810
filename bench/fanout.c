/*
 * fanout: the project's topic fan-out load client. One publisher WebSocket
 * and N subscriber WebSockets; every message the publisher sends is expected
 * on every subscriber, and the client measures how fast the server fans it
 * out. With -R it measures pairs instead: each receiver has a sender of
 * its own, whose messages only it gets (a send through the server from one
 * socket to another, e.g. across the nodes of a cluster). epoll, one
 * thread, non-blocking sockets, libc only; plain ws:// on IPv4.
 * bench/fanout.sh and bench/cluster.sh build it themselves (build_c_tool in
 * bench/lib.sh):
 *
 *   cc -O2 -Wall -Wextra -o /tmp/fanout bench/fanout.c
 *
 *   fanout [options] ws://IPv4:PORT/sub-path [ws://IPv4:PORT/sub-path ...] ws://IPv4:PORT/pub-path
 *     -n N   subscribers: WebSockets to the sub-path URLs, round robin
 *            (subscriber i to URL i mod URLs; at most 8 URLs, e.g. one
 *            per node of a cluster); the last URL is the publisher's [10000]
 *     -s B   message size in bytes, 40..65535                           [64]
 *     -W N   messages in flight in the throughput phase, 1..64           [8]
 *     -d S   seconds of each measured phase                             [10]
 *     -w S   unreported warm-up traffic (window -W) before the phases,
 *            after the subscriptions are in place                        [2]
 *     -P S   pause this long after READY, before any further traffic (so
 *            that the caller can read the server's memory at rest)       [0]
 *     -k N   upgrades in flight at once                                [200]
 *     -S N   bind sources 127.0.0.2 .. 127.0.0.(N+1), round robin (for
 *            more connections than one address has ephemeral ports)  [off]
 *     -T S   a message not received by every subscriber this long after
 *            it was sent is given up: its missing deliveries are counted
 *            and the run goes on                                        [10]
 *     -C PID[,PID...]  the server's pid, or up to 8 (the nodes of a
 *            cluster, Redis): their CPU use (utime + stime from
 *            /proc/PID/stat, all threads) is reported per phase      [off]
 *     -b     busy-poll during the phases (epoll_wait with a zero timeout):
 *            over loopback the kernel charges the sender for waking a
 *            sleeping receiver, so a client that sleeps between messages
 *            makes every delivery cost the server more (tens of per cent
 *            here) than it would over a network; a spinning client is
 *            never asleep. Its CPU is then 100 %: see busy_pct     [off]
 *     -R     pairs (at most 1000): each of the -n subscribers is a
 *            "receiver" with a "sender" of its own. A receiver's first
 *            message must be a text message of 1 to 200 bytes, an id (its
 *            socket id, say); then its sender connects to the publisher URL
 *            with that id appended, percent-encoded (so that URL ends in
 *            e.g. "?to="). Each sender's messages are expected on its
 *            receiver alone, and each pair has its own window: with -W 16
 *            and 10 pairs, 160 messages are in flight. The steps, checks
 *            and output below are the same, per pair ("last" = the
 *            receiver's receipt)                                   [off]
 *
 * Steps:
 *  1. connect: the publisher and the subscribers connect (upgrade, 101 and
 *     RFC 6455's sample key's Sec-WebSocket-Accept checked), -k at a time
 *     (-R: each sender once its receiver has its id).
 *  2. subscribe: the server may subscribe a socket only after its 101 (a
 *     gateway script on "open"), so the publisher sends probe messages, one
 *     at a time (a new one when the last one has made no progress for
 *     PROBE_QUIET_MS), until one of them has reached every open subscriber
 *     (-R: each sender, until one has reached its receiver; this also waits
 *     for the nodes of a cluster to know each other).
 *     A subscriber that received message k also gets every later one, so
 *     from then on every subscription is in place. Then "READY <subs> <ms>"
 *     (open subscribers, milliseconds from the last upgrade) is printed on
 *     a line of its own, and the client waits -P seconds.
 *  3. phases, each starting with nothing in flight: warm-up (-w s, window
 *     -W, not reported), `latency` (-d s, window 1) and `throughput` (-d s,
 *     window -W). The publisher keeps `window` messages in flight: a message
 *     is done when every subscriber that was open when it was sent got it
 *     (or, see -T, it was given up); then the next is sent at once. After
 *     -d seconds no new message is sent, and those in flight are drained.
 *
 * A message is a masked text frame of -s bytes: "<seq> <t>" (16 hex digits
 * each: a sequence number and the CLOCK_MONOTONIC send time in ns), a space
 * and padding. Every frame a subscriber receives is checked: text, FIN,
 * unmasked, no reserved bits, length -s, the padding, a sequence number
 * this client sent with this send time, and later than the subscriber's
 * previous one (a subscriber that skips a message is counted as missing it
 * at once). Pings are answered with pongs.
 *
 * Output: "READY ..." as above, then one JSON line per measured phase:
 *   mode ("fanout", or "pairs" with -R),
 *   phase, subs, open (subscribers open at the end of the phase), size,
 *   window, secs, connect_s, subscribe_s,
 *   msgs        messages sent in the window
 *   msgs_done   of those, received by every subscriber
 *   deliveries  subscriber receipts inside the window (of any message)
 *   deliveries_per_s  = deliveries / secs
 *   msgs_per_s  = deliveries_per_s / subs (messages' worth of deliveries)
 *   last_p50_us, last_p99_us, last_p999_us, last_max_us   send -> the last
 *               subscriber's receipt, over the window's messages that every
 *               subscriber got (a given-up message is left out)
 *   first_p50_us  send -> the first subscriber's receipt
 *   each_p50_us, each_p99_us, each_p999_us  send -> each receipt (a
 *               log-linear histogram, about 0.2 % resolution above 1 ms)
 *   urls        the number of subscriber URLs; by URL, in their order:
 *   url_deliveries_per_s  [...] deliveries in the window / secs
 *   url_each_p50_us, url_each_p99_us  [...] send -> each receipt
 *   missing     deliveries that never came (skipped, given up, or owed by a
 *               subscriber that failed)
 *   gave_up     messages given up (-T)
 *   late        receipts of a message already given up
 *   bad_frames, bad_seq, closed_by_server, connect_fail, errors
 *   cpu_pct     this process's CPU (user + system, % of one core) in the
 *               window; server_cpu_pct likewise for -C's processes together
 *               (null without -C), server_cpu_pcts [...] for each of them
 *   busy_pct    the share of the window this process spent handling what
 *               came (outside epoll_wait, not counting turns of the loop
 *               that found nothing): near 100 means the client, not the
 *               server, may be what limits the figures (with -b too, where
 *               cpu_pct is always about 100)
 * A phase that could not run (the publisher failed, say) still prints its
 * line, with "aborted":true. A failing publisher (-R: sender) ends the run,
 * and so does, with -R, a receiver failing before its sender could start.
 * The first few failures are described on stderr. Exit status: 0 when every
 * subscriber opened and got every message with no error; 1 otherwise; 2 on
 * bad usage.
 *
 * The whole tool stops by itself: connecting is bounded by SETUP_TIMEOUT_S,
 * the subscription wait by SUBSCRIBE_TIMEOUT_S, each message by -T, and the
 * run as a whole by the sum of those and the phases.
 */
#define _GNU_SOURCE
#include <signal.h>

#define PROG "fanout"
#define BUF_FIRST_CAP 256 /* only pongs and the publisher's frames wait here */
#include "wsbench.h"

#define MAX_WINDOW 64
#define RING 1024             /* message slots; > MAX_WINDOW, a power of two */
#define READ_CHUNK 65536
#define HEAD_CAP 8192         /* upgrade answer buffer (freed once open) */
#define MAX_LOGGED_FAILURES 5
#define SETUP_TIMEOUT_S 120
#define SUBSCRIBE_TIMEOUT_S 60
#define PROBE_QUIET_MS 100
#define HDR_LEN 34            /* "%016llx %016llx " */
#define MAX_URLS 8            /* subscriber URLs */
#define MAX_PIDS 8            /* -C pids */
#define MAX_ID 200            /* -R: the longest id a receiver may be sent */
#define MAX_PAIRS 1000        /* -R: each pair has its own RING of messages */
#define MIN_SIZE 40
#define NS 1000000000LL

enum state { ST_FREE, ST_TCP, ST_UPGRADE, ST_OPEN, ST_DONE };

struct conn {
    int fd;
    enum state st;
    bool is_pub;
    bool want_id;          /* -R receivers: the first message (an id) is still to come */
    int group;             /* the group it belongs to (see struct group) */
    int url;               /* subscribers: the index of its URL */
    char *path;            /* -R senders: the publisher path with the receiver's id */
    unsigned char *part;   /* upgrade: the answer so far; open: a partial frame */
    uint32_t partlen, partcap;
    uint64_t last_seq;     /* subscribers: the last message received (0: none) */
    struct buf out;        /* bytes still to send (the publisher's frames, pongs) */
};

struct url {
    struct sockaddr_in addr;
    char hostport[80], path[1024];
};

/* A message in flight (or done), in its group's ring slot seq % RING. */
struct msg {
    uint64_t seq;
    int64_t t_send, t_first;
    uint32_t expected, got, missed;
    bool probe, done;
    int phase;
};

/* Log-linear histogram of microseconds: exact below 1024, then 512 buckets
 * per power of two. */
#define HIST_SUB 512
#define HIST_BUCKETS (1024 + 44 * HIST_SUB)

struct phase {
    const char *name;
    bool reported, ran, aborted;
    int window, secs;
    int64_t t0, t_end, t_drained;
    long long msgs, msgs_done, deliveries, deliveries_total, missing, gave_up, late;
    long long bad_frames, bad_seq, errors, closed, connect_fail_at_start;
    struct u32s last_us, first_us;
    uint64_t *hist;
    long long nhist;
    long long url_deliveries[MAX_URLS]; /* deliveries in the window, by subscriber URL */
    uint64_t *url_hist[MAX_URLS];       /* send -> each receipt, by subscriber URL */
    long long url_nhist[MAX_URLS];
    double cpu0, cpu1;
    long long srv0[MAX_PIDS], srv1[MAX_PIDS];
    bool srv_read;        /* srv1 was read (at t_end) */
    int64_t wait0, wait1; /* wait_ns at t0 and at t_end */
};

/* One publisher and the subscribers its messages are for, with the messages
 * in flight: one group without -R, one per subscriber (a pair) with -R. */
struct group {
    struct conn *pub;
    struct msg *ring;                /* RING slots */
    uint64_t next_seq, base_seq;     /* in flight: [base_seq, next_seq) */
    long long open;                  /* its subscribers open */
    int64_t probe_last_progress;     /* when its newest probe was sent or last received */
    bool probe_reached;              /* a probe reached every subscriber */
};

/* ------------------------------------------------------------ options ---- */
static int nsubs = 10000, msg_size = 64, window = 8, secs = 10, warm_secs = 2, pause_secs = 0;
static int max_setup = 200, nsrc = 0, msg_timeout_s = 10;
static int server_pids[MAX_PIDS], nserver_pids;
static bool busy_poll, pairs;
static struct url sub_urls[MAX_URLS], pub_url;
static int nurls;

/* -------------------------------------------------------------- state ---- */
static struct conn *conns; /* nsubs subscribers, then the publishers (one per group) */
static struct group *groups;
static int ngroups;
static int ep;
static unsigned char *pad;         /* the expected message bytes after the header */
static unsigned char rbuf[READ_CHUNK + HEAD_CAP];
static uint32_t frame_cap;         /* a subscriber's partial-frame buffer */
static uint32_t rng;

static long long subs_open, upgraded, connect_fail, errors, closed_by_server, bad_frames, bad_seq;
static long long subs_settled, pubs_settled; /* opened, or failed to */
static long long inflight;                   /* messages in flight, every group's */
static int logged;

enum stage { SG_CONNECT, SG_SUBSCRIBE, SG_PAUSE, SG_PHASE, SG_END };
static enum stage stage = SG_CONNECT;
static struct phase phases[3] = {
    {.name = "warmup", .reported = false},
    {.name = "latency", .reported = true},
    {.name = "throughput", .reported = true},
};
static int cur = -1;                 /* the phase running (SG_PHASE) */
static bool fatal;                   /* the publisher is gone, or a set-up step failed */
static int64_t t_start, t_connected, t_subscribed, t_pause_end;
static int64_t wait_ns;              /* idle time: in epoll_wait, or in turns that found nothing */

/* --------------------------------------------------------------- util ---- */
static int64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * NS + t.tv_nsec;
}

/* utime + stime of -C's k-th process, in clock ticks; -1 when unknown. */
static long long server_ticks(int k)
{
    char path[64], line[2048];
    snprintf(path, sizeof path, "/proc/%d/stat", server_pids[k]);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    size_t n = fread(line, 1, sizeof line - 1, f);
    fclose(f);
    line[n] = 0;
    char *p = strrchr(line, ')'); /* the command name may hold spaces */
    if (!p) return -1;
    unsigned long long ut = 0, stt = 0;
    /* after ") ": state ppid pgrp session tty_nr tpgid flags minflt cminflt majflt cmajflt utime stime */
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &stt) != 2) return -1;
    return (long long)(ut + stt);
}

static unsigned hist_bucket(uint64_t us)
{
    if (us < 1024) return (unsigned)us;
    int e = 63 - __builtin_clzll(us); /* 10 .. 63 */
    if (e > 10 + 43) return HIST_BUCKETS - 1;
    unsigned idx = (unsigned)((us >> (e - 9)) & (HIST_SUB - 1));
    return 1024 + (unsigned)(e - 10) * HIST_SUB + idx;
}

/* The middle of a bucket, in us. */
static double hist_value(unsigned b)
{
    if (b < 1024) return b;
    unsigned e = (b - 1024) / HIST_SUB + 10, idx = (b - 1024) % HIST_SUB;
    double lo = (double)((uint64_t)(HIST_SUB + idx) << (e - 9));
    return lo + (double)((uint64_t)1 << (e - 9)) / 2;
}

/* The q-quantile of a histogram holding n values. */
static double hist_quantile(const uint64_t *hist, long long n, double q)
{
    if (n == 0 || !hist) return 0;
    long long want = (long long)((double)n * q), seen = 0;
    if (want >= n) want = n - 1;
    for (unsigned b = 0; b < HIST_BUCKETS; b++) {
        seen += (long long)hist[b];
        if (seen > want) return hist_value(b);
    }
    return hist_value(HIST_BUCKETS - 1);
}

static void push_us(struct u32s *s, int64_t ns)
{
    int64_t us = ns / 1000;
    u32s_push(s, us < 0 ? 0 : us > (int64_t)UINT32_MAX ? UINT32_MAX : (uint32_t)us, 4096);
}

static struct phase *reporting(void)
{
    return stage == SG_PHASE && cur >= 0 ? &phases[cur] : NULL;
}

/* ------------------------------------------------------ connection life ---- */
static void msg_check_done(struct group *g, struct msg *m, int64_t t);

static const char *role(const struct conn *c)
{
    if (pairs) return c->is_pub ? "sender" : "receiver";
    return c->is_pub ? "publisher" : "subscriber";
}

/* A connection's number in the messages: the subscriber's index, or its
 * group's for a publisher. */
static int conn_no(const struct conn *c)
{
    return c->is_pub ? c->group : (int)(c - conns);
}

static void conn_release(struct conn *c)
{
    if (c->fd >= 0) close(c->fd);
    c->fd = -1;
    free(c->part);
    c->part = NULL;
    c->partlen = c->partcap = 0;
    free(c->out.p);
    memset(&c->out, 0, sizeof c->out);
    free(c->path);
    c->path = NULL;
    c->st = ST_DONE;
}

/* Count and (for the first few) describe a failure, then drop the
 * connection. A subscriber that fails owes the messages in flight it has
 * not received yet (they are counted missing); a publisher's failure ends
 * the run, and so does (-R) a receiver's before its sender could start. */
static void conn_fail(struct conn *c, const char *why, int saved_errno)
{
    bool before_open = c->st == ST_TCP || c->st == ST_UPGRADE;
    if (before_open) {
        connect_fail++;
        if (c->is_pub) pubs_settled++;
        else subs_settled++;
    } else {
        errors++;
        if (reporting()) reporting()->errors++;
    }
    if (logged < MAX_LOGGED_FAILURES) {
        logged++;
        log_failure(role(c), conn_no(c), before_open, why, saved_errno);
    }
    bool was_open = c->st == ST_OPEN;
    if (pairs && !c->is_pub && (before_open || c->want_id)) {
        /* its sender cannot start: the pair is lost before it began */
        fatal = true;
    }
    conn_release(c);
    if (c->is_pub) {
        fatal = true;
        return;
    }
    if (was_open) {
        struct group *g = &groups[c->group];
        subs_open--;
        g->open--;
        int64_t t = now_ns();
        /* (msg_check_done may send more: those were sent without c) */
        uint64_t end = g->next_seq;
        for (uint64_t s = g->base_seq > c->last_seq + 1 ? g->base_seq : c->last_seq + 1; s < end; s++) {
            struct msg *m = &g->ring[s % RING];
            if (m->probe || m->done) continue;
            m->missed++;
            msg_check_done(g, m, t);
        }
    }
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

/* ------------------------------------------------------------ messages ---- */
static void advance_base(struct group *g)
{
    while (g->base_seq < g->next_seq && g->ring[g->base_seq % RING].done) g->base_seq++;
}

/* Send group g's next message (a probe in the subscribe step). */
static void publish(struct group *g, bool probe)
{
    unsigned char msg[65536];
    int64_t t = now_ns();
    uint64_t seq = g->next_seq++;
    char hdr[HDR_LEN + 1];
    snprintf(hdr, sizeof hdr, "%016llx %016llx ", (unsigned long long)seq, (unsigned long long)t);
    memcpy(msg, hdr, HDR_LEN);
    memcpy(msg + HDR_LEN, pad, (size_t)msg_size - HDR_LEN);
    struct msg *m = &g->ring[seq % RING];
    memset(m, 0, sizeof *m);
    m->seq = seq;
    m->t_send = t;
    m->expected = (uint32_t)g->open;
    m->probe = probe;
    m->phase = probe ? -1 : cur;
    if (!probe) inflight++;
    struct phase *ph = reporting();
    if (ph && t < ph->t_end) ph->msgs++;
    send_frame(g->pub, 1, msg, (size_t)msg_size);
    conn_flush(g->pub);
}

/* Keep group g's window full while the current phase's time lasts (a group
 * with no subscriber left sends nothing). */
static void fill_window(struct group *g)
{
    if (stage != SG_PHASE || fatal) return;
    struct phase *ph = &phases[cur];
    while (!fatal && g->open > 0 && g->next_seq - g->base_seq < (uint64_t)ph->window && now_ns() < ph->t_end)
        publish(g, false);
}

/* A message is done when every subscriber it was sent to got it or will not. */
static void msg_check_done(struct group *g, struct msg *m, int64_t t)
{
    if (m->done || m->probe || m->got + m->missed < m->expected) return;
    m->done = true;
    inflight--;
    if (m->phase >= 0) {
        struct phase *ph = &phases[m->phase];
        if (m->t_send < ph->t_end) {
            ph->missing += m->missed;
            if (m->missed == 0) {
                ph->msgs_done++;
                push_us(&ph->last_us, t - m->t_send);
                push_us(&ph->first_us, m->t_first - m->t_send);
            }
        }
    }
    advance_base(g);
    fill_window(g);
}

/* Give up each group's oldest message if it has waited longer than -T. */
static void check_timeouts(int64_t t)
{
    for (int k = 0; k < ngroups; k++) {
        struct group *g = &groups[k];
        while (g->base_seq < g->next_seq) {
            struct msg *m = &g->ring[g->base_seq % RING];
            if (m->probe || m->done || t - m->t_send < (int64_t)msg_timeout_s * NS) break;
            uint32_t owed = m->expected - m->got - m->missed;
            if (logged < MAX_LOGGED_FAILURES) {
                logged++;
                if (pairs)
                    fprintf(stderr, "fanout: pair %d: message %llu given up after %d s: the receiver never got it\n",
                            k, (unsigned long long)m->seq, msg_timeout_s);
                else
                    fprintf(stderr, "fanout: message %llu given up after %d s: %u of %u subscribers never got it\n",
                            (unsigned long long)m->seq, msg_timeout_s, owed, m->expected);
            }
            m->missed += owed;
            if (m->phase >= 0) phases[m->phase].gave_up++;
            msg_check_done(g, m, t);
        }
    }
}

static int hexval(unsigned char ch)
{
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    return -1;
}

static bool parse_hex16(const unsigned char *p, uint64_t *v)
{
    uint64_t x = 0;
    for (int i = 0; i < 16; i++) {
        int h = hexval(p[i]);
        if (h < 0) return false;
        x = x << 4 | (uint64_t)h;
    }
    *v = x;
    return true;
}

static void count_bad_frame(struct conn *c, const char *why)
{
    bad_frames++;
    if (reporting()) reporting()->bad_frames++;
    if (logged < MAX_LOGGED_FAILURES) {
        logged++;
        fprintf(stderr, "fanout: %s %d: bad frame: %s\n", role(c), conn_no(c), why);
    }
}

static void conn_start(struct conn *c, int i);

/* -R: receiver c's first message, its id, arrived: its sender connects to
 * the publisher URL with the id appended (percent-encoded). False if c
 * failed. */
static bool on_id(struct conn *c, const unsigned char *d, size_t n)
{
    if (n == 0 || n > MAX_ID) {
        count_bad_frame(c, "the first message is not an id (empty or too long)");
        conn_fail(c, "no id", 0);
        return false;
    }
    struct conn *s = groups[c->group].pub;
    size_t plen = strlen(pub_url.path);
    s->path = xrealloc(NULL, plen + 3 * n + 1);
    memcpy(s->path, pub_url.path, plen);
    char *o = s->path + plen;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = d[i];
        if ((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-' ||
            ch == '_' || ch == '.' || ch == '~')
            *o++ = (char)ch;
        else
            o += sprintf(o, "%%%02X", ch);
    }
    *o = 0;
    c->want_id = false;
    conn_start(s, (int)(s - conns));
    return true;
}

/* A whole text frame of the right size reached subscriber c at time t. */
static void on_delivery(struct conn *c, const unsigned char *d, int64_t t)
{
    uint64_t seq, ts;
    if (!parse_hex16(d, &seq) || d[16] != ' ' || !parse_hex16(d + 17, &ts) || d[33] != ' ' ||
        memcmp(d + HDR_LEN, pad, (size_t)msg_size - HDR_LEN) != 0) {
        count_bad_frame(c, "not a message of ours");
        return;
    }
    struct group *g = &groups[c->group];
    struct phase *ph = reporting();
    if (seq >= g->next_seq || seq <= c->last_seq || seq == 0) {
        bad_seq++;
        if (ph) ph->bad_seq++;
        if (logged < MAX_LOGGED_FAILURES) {
            logged++;
            fprintf(stderr, "fanout: %s %d: message %llu after %llu (next to send: %llu)\n", role(c),
                    conn_no(c), (unsigned long long)seq, (unsigned long long)c->last_seq,
                    (unsigned long long)g->next_seq);
        }
        return;
    }
    if (seq < g->base_seq) {
        /* a message already given up (or a probe from before the window) */
        c->last_seq = seq;
        const struct msg *om = &g->ring[seq % RING];
        struct phase *lp = om->seq == seq && om->phase >= 0 ? &phases[om->phase] : NULL;
        if (lp) lp->late++;
        if (ph) {
            ph->deliveries_total++;
            if (t < ph->t_end) {
                ph->deliveries++;
                ph->url_deliveries[c->url]++;
            }
        }
        return;
    }
    struct msg *m = &g->ring[seq % RING];
    if (m->seq != seq || (uint64_t)m->t_send != ts) {
        count_bad_frame(c, "send time does not match");
        return;
    }
    /* Skipped messages still in flight: this subscriber will never get them. */
    for (uint64_t s = c->last_seq + 1 > g->base_seq ? c->last_seq + 1 : g->base_seq; s < seq; s++) {
        struct msg *sk = &g->ring[s % RING];
        if (sk->probe || sk->done) continue;
        sk->missed++;
        msg_check_done(g, sk, t);
    }
    c->last_seq = seq;
    m->got++;
    if (m->got == 1) m->t_first = t;
    if (m->probe) {
        g->probe_last_progress = t;
        if (m->got >= (uint32_t)g->open && seq == g->next_seq - 1) g->probe_reached = true;
        return;
    }
    if (ph) {
        ph->deliveries_total++;
        if (t < ph->t_end) {
            ph->deliveries++;
            ph->url_deliveries[c->url]++;
        }
        if (m->phase == cur && m->t_send < ph->t_end) {
            int64_t us = (t - m->t_send) / 1000;
            unsigned b = hist_bucket(us < 0 ? 0 : (uint64_t)us);
            ph->hist[b]++;
            ph->nhist++;
            ph->url_hist[c->url][b]++;
            ph->url_nhist[c->url]++;
        }
    }
    msg_check_done(g, m, t);
}

/* Parse the frames in p[0 .. n). Returns the bytes consumed (a trailing
 * partial frame is left), or -1 if c was dropped. */
static long parse_frames(struct conn *c, const unsigned char *p, size_t n, int64_t t)
{
    size_t off = 0;
    for (;;) {
        const unsigned char *f = p + off;
        size_t avail = n - off;
        if (avail < 2) break;
        struct ws_head h;
        bool whole = ws_parse_head(f, avail, &h);
        if (h.masked) { conn_fail(c, "server sent a masked frame", 0); return -1; }
        if (h.rsv) { conn_fail(c, "frame with reserved bits set", 0); return -1; }
        if (!whole) break;
        bool fin = h.fin;
        int op = h.op;
        uint64_t len = h.len;
        size_t hl = h.hl;
        if (!ws_control_ok(&h)) { conn_fail(c, "bad control frame", 0); return -1; }
        /* Only frames of -s bytes (and -R's ids, at most MAX_ID) are
         * expected, so a partial frame always fits the connection's small
         * buffer. */
        if (len + hl > frame_cap) { conn_fail(c, "frame longer than any we expect", 0); return -1; }
        if (avail < hl + len) break;
        const unsigned char *d = f + hl;
        off += hl + (size_t)len;
        switch (op) {
        case 1:
        case 0:
        case 2:
            if (c->is_pub) { count_bad_frame(c, pairs ? "data frame on the sender" : "data frame on the publisher"); break; }
            if (op != 1) { count_bad_frame(c, op == 2 ? "binary frame" : "continuation frame"); break; }
            if (!fin) { count_bad_frame(c, "fragmented message"); break; }
            if (c->want_id) {
                if (!on_id(c, d, (size_t)len)) return -1;
                break;
            }
            if (len != (uint64_t)msg_size) { count_bad_frame(c, "wrong length"); break; }
            on_delivery(c, d, t);
            break;
        case 8: {
            char why[64];
            ws_close_why(why, sizeof why, d, len);
            closed_by_server++;
            if (reporting()) reporting()->closed++;
            conn_fail(c, why, 0);
            return -1;
        }
        case 9:
            send_frame(c, 10, d, (size_t)len);
            break;
        case 10:
            break;
        default:
            conn_fail(c, "unknown opcode", 0);
            return -1;
        }
    }
    return (long)off;
}

/* ------------------------------------------------------------ upgrade ---- */
static void queue_upgrade(struct conn *c)
{
    const struct url *u = c->is_pub ? &pub_url : &sub_urls[c->url];
    char req[1200 + sizeof u->path + 3 * MAX_ID];
    int n = ws_sample_upgrade(req, sizeof req, c->path ? c->path : u->path, u->hostport);
    buf_put(&c->out, req, (size_t)n);
    c->st = ST_UPGRADE;
}

/* Look for the complete 101 answer in c->part. Returns the length of the
 * answer's head, 0 while it is incomplete, -1 if c failed. */
static long check_upgrade_answer(struct conn *c)
{
    unsigned char *p = c->part;
    size_t avail = c->partlen, head_len = http_head_len(p, avail);
    if (head_len == 0) {
        if (avail >= HEAD_CAP) { conn_fail(c, "upgrade answer too large", 0); return -1; }
        return 0;
    }
    char head[HEAD_CAP + 1];
    memcpy(head, p, head_len);
    head[head_len] = 0;
    const char *why = NULL;
    bool accept_ok = false, upgrade_ok = false, ext = false;
    if (strncmp(head, "HTTP/1.1 101", 12) != 0) {
        why = "no 101 answer";
    } else {
        const char *pos = head, *name, *v;
        size_t nl, vl;
        while (head_field(&pos, &name, &nl, &v, &vl, " \t")) {
            if (span_is(name, nl, "Sec-WebSocket-Accept"))
                accept_ok = vl == strlen(WS_ACCEPT) && strncmp(v, WS_ACCEPT, vl) == 0;
            else if (span_is(name, nl, "Upgrade"))
                upgrade_ok = span_is(v, vl, "websocket");
            else if (span_is(name, nl, "Sec-WebSocket-Extensions"))
                ext = true;
        }
        if (!accept_ok) why = "missing or wrong Sec-WebSocket-Accept";
        else if (!upgrade_ok) why = "no Upgrade: websocket";
        else if (ext) why = "an extension we never offered";
    }
    if (why) {
        char *eol = strstr(head, "\r\n");
        if (eol) *eol = 0;
        if (logged < MAX_LOGGED_FAILURES) fprintf(stderr, "fanout: answer: %.120s\n", head);
        conn_fail(c, why, 0);
        return -1;
    }
    return (long)head_len;
}

/* Keep up to frame_cap bytes of a partial frame for the next read. */
static void keep_partial(struct conn *c, const unsigned char *p, size_t n)
{
    if (n > 0 && c->partcap < frame_cap) {
        c->part = xrealloc(c->part, frame_cap);
        c->partcap = frame_cap;
    }
    if (n > 0) memmove(c->part, p, n);
    c->partlen = (uint32_t)n;
}

static void on_open(struct conn *c, int64_t t)
{
    c->st = ST_OPEN;
    upgraded++;
    if (c->is_pub) {
        pubs_settled++;
    } else {
        subs_settled++;
        subs_open++;
        groups[c->group].open++;
        c->want_id = pairs;
    }
    (void)t;
}

/* ------------------------------------------------------------ driving ---- */
static void drive(struct conn *c, uint32_t events)
{
    if (c->st == ST_TCP) {
        if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) return;
        int err = connect_error(c->fd);
        if (err) { conn_fail(c, "connect", err); return; }
        queue_upgrade(c);
        c->part = xrealloc(NULL, HEAD_CAP);
        c->partcap = HEAD_CAP;
        c->partlen = 0;
    }
    if (!conn_flush(c)) return;

    if (c->st == ST_UPGRADE) {
        for (;;) {
            ssize_t r = recv(c->fd, c->part + c->partlen, c->partcap - c->partlen, 0);
            if (r > 0) {
                c->partlen += (uint32_t)r;
                if (c->partlen < c->partcap) continue;
            } else if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
                conn_fail(c, r == 0 ? "server closed during the upgrade" : "read error", r == 0 ? 0 : errno);
                return;
            }
            break;
        }
        long hl = check_upgrade_answer(c);
        if (hl <= 0) return;
        int64_t t = now_ns();
        on_open(c, t);
        /* Frames right behind the answer: move them where reads continue. */
        size_t rest = c->partlen - (size_t)hl;
        memcpy(rbuf, c->part + hl, rest);
        free(c->part);
        c->part = NULL;
        c->partlen = c->partcap = 0;
        long used = parse_frames(c, rbuf, rest, t);
        if (used < 0) return;
        keep_partial(c, rbuf + used, rest - (size_t)used);
        /* The socket may hold more: read on below (edge-triggered). */
    }

    if (c->st == ST_OPEN) {
        for (;;) {
            size_t have = c->partlen;
            if (have) memcpy(rbuf, c->part, have);
            size_t want = sizeof rbuf - have;
            ssize_t r = recv(c->fd, rbuf + have, want, 0);
            if (r > 0) {
                int64_t t = now_ns();
                long used = parse_frames(c, rbuf, have + (size_t)r, t);
                if (used < 0) return;
                keep_partial(c, rbuf + used, have + (size_t)r - (size_t)used);
                /* A short read of a stream socket drained it (epoll(7)). */
                if ((size_t)r < want) break;
                continue;
            }
            if (r == 0) { conn_fail(c, "server closed the connection without a close frame", 0); return; }
            if (errno == EAGAIN || errno == EINTR) break;
            conn_fail(c, errno == ECONNRESET ? "connection reset" : "read error", errno);
            return;
        }
    }
    if (c->out.len > c->out.off) conn_flush(c);
}

static void conn_start(struct conn *c, int i)
{
    const struct url *u = c->is_pub ? &pub_url : &sub_urls[c->url];
    c->st = ST_TCP;
    const char *why = tcp_start(ep, &c->fd, &u->addr, nsrc, i, (uint32_t)i);
    if (why) conn_fail(c, why, errno);
}

/* ------------------------------------------------------------- phases ---- */
static uint64_t *hist_alloc(void)
{
    uint64_t *h = calloc(HIST_BUCKETS, sizeof *h);
    if (!h) { fprintf(stderr, "fanout: out of memory\n"); exit(1); }
    return h;
}

static void phase_start(int k)
{
    struct phase *ph = &phases[k];
    cur = k;
    stage = SG_PHASE;
    ph->ran = true;
    ph->window = k == 1 ? 1 : window;
    ph->secs = k == 0 ? warm_secs : secs;
    ph->hist = hist_alloc();
    for (int u = 0; u < nurls; u++) ph->url_hist[u] = hist_alloc();
    ph->connect_fail_at_start = connect_fail;
    ph->cpu0 = cpu_seconds();
    for (int i = 0; i < nserver_pids; i++) ph->srv0[i] = server_ticks(i);
    ph->wait0 = wait_ns;
    ph->t0 = now_ns();
    ph->t_end = ph->t0 + (int64_t)ph->secs * NS;
    for (int g = 0; g < ngroups; g++) fill_window(&groups[g]);
}

/* The CPU readings of -C's processes at the end of the phase's window. */
static void read_server_cpu(struct phase *ph)
{
    if (ph->srv_read) return;
    ph->srv_read = true;
    for (int i = 0; i < nserver_pids; i++) ph->srv1[i] = server_ticks(i);
}

static void print_phase(const struct phase *ph)
{
    double measured = (double)ph->secs;
    double dps = ph->ran && measured > 0 ? (double)ph->deliveries / measured : 0;
    double cpu = ph->ran && measured > 0 ? 100.0 * (ph->cpu1 - ph->cpu0) / measured : 0;
    double busy = ph->ran && measured > 0 ? 100.0 * (1.0 - (double)(ph->wait1 - ph->wait0) / 1e9 / measured) : 0;
    long hz = sysconf(_SC_CLK_TCK);
    /* -C: the sum of the processes' CPU, and each one's ("null" when unknown) */
    char srv[32] = "null", each[MAX_PIDS * 16 + 4] = "[";
    double sum = 0;
    bool known = ph->ran && measured > 0 && nserver_pids > 0;
    for (int i = 0; i < nserver_pids; i++) {
        bool ok = ph->ran && measured > 0 && ph->srv0[i] >= 0 && ph->srv1[i] >= 0;
        double v = ok ? 100.0 * (double)(ph->srv1[i] - ph->srv0[i]) / (double)hz / measured : 0;
        size_t l = strlen(each);
        if (ok) snprintf(each + l, sizeof each - l, "%s%.0f", i ? "," : "", v);
        else snprintf(each + l, sizeof each - l, "%snull", i ? "," : "");
        known = known && ok;
        sum += v;
    }
    strcat(each, "]");
    if (known) snprintf(srv, sizeof srv, "%.0f", sum);
    printf("{\"tool\":\"fanout\",\"mode\":\"%s\",\"phase\":\"%s\",\"aborted\":%s,\"subs\":%d,\"open\":%lld,\"size\":%d,"
           "\"window\":%d,\"secs\":%d,\"connect_s\":%.3f,\"subscribe_s\":%.3f,",
           pairs ? "pairs" : "fanout", ph->name, ph->aborted || !ph->ran ? "true" : "false", nsubs, subs_open, msg_size,
           ph->ran ? ph->window : (ph == &phases[1] ? 1 : window), secs,
           t_connected ? (double)(t_connected - t_start) / 1e9 : 0.0,
           t_subscribed ? (double)(t_subscribed - t_connected) / 1e9 : 0.0);
    printf("\"msgs\":%lld,\"msgs_done\":%lld,\"deliveries\":%lld,\"deliveries_total\":%lld,"
           "\"deliveries_per_s\":%.0f,\"msgs_per_s\":%.1f,",
           ph->msgs, ph->msgs_done, ph->deliveries, ph->deliveries_total, dps, nsubs > 0 ? dps / nsubs : 0.0);
    printf("\"last_p50_us\":%u,\"last_p99_us\":%u,\"last_p999_us\":%u,\"last_max_us\":%u,\"first_p50_us\":%u,"
           "\"each_p50_us\":%.0f,\"each_p99_us\":%.0f,\"each_p999_us\":%.0f,",
           u32s_pct(&ph->last_us, 0.5), u32s_pct(&ph->last_us, 0.99), u32s_pct(&ph->last_us, 0.999),
           u32s_max(&ph->last_us), u32s_pct(&ph->first_us, 0.5),
           hist_quantile(ph->hist, ph->nhist, 0.5), hist_quantile(ph->hist, ph->nhist, 0.99),
           hist_quantile(ph->hist, ph->nhist, 0.999));
    printf("\"urls\":%d,\"url_deliveries_per_s\":[", nurls);
    for (int u = 0; u < nurls; u++)
        printf("%s%.0f", u ? "," : "", ph->ran && measured > 0 ? (double)ph->url_deliveries[u] / measured : 0.0);
    printf("],\"url_each_p50_us\":[");
    for (int u = 0; u < nurls; u++)
        printf("%s%.0f", u ? "," : "", hist_quantile(ph->url_hist[u], ph->url_nhist[u], 0.5));
    printf("],\"url_each_p99_us\":[");
    for (int u = 0; u < nurls; u++)
        printf("%s%.0f", u ? "," : "", hist_quantile(ph->url_hist[u], ph->url_nhist[u], 0.99));
    printf("],");
    printf("\"missing\":%lld,\"gave_up\":%lld,\"late\":%lld,\"bad_frames\":%lld,\"bad_seq\":%lld,"
           "\"closed_by_server\":%lld,\"connect_fail\":%lld,\"errors\":%lld,\"cpu_pct\":%.0f,\"busy_pct\":%.0f,"
           "\"busy_poll\":%s,\"server_cpu_pct\":%s,\"server_cpu_pcts\":%s,\"drain_s\":%.3f}\n",
           ph->missing, ph->gave_up, ph->late, ph->bad_frames, ph->bad_seq, ph->closed, connect_fail, ph->errors,
           cpu, busy < 0 ? 0 : busy, busy_poll ? "true" : "false", srv, each,
           ph->t_drained > ph->t_end ? (double)(ph->t_drained - ph->t_end) / 1e9 : 0.0);
    fflush(stdout);
}

static void phase_finish(int64_t t)
{
    struct phase *ph = &phases[cur];
    ph->t_drained = t;
    if (ph->cpu1 == 0) ph->cpu1 = cpu_seconds();
    read_server_cpu(ph);
    if (ph->wait1 == 0) ph->wait1 = wait_ns;
    u32s_sort(&ph->last_us);
    u32s_sort(&ph->first_us);
    if (fatal) ph->aborted = true;
    if (ph->reported) print_phase(ph);
}

/* --------------------------------------------------------------- main ---- */
static void usage(void)
{
    fprintf(stderr,
            "usage: fanout [-n subs] [-s bytes] [-W window] [-d secs] [-w warm-up secs] [-P pause secs]\n"
            "              [-k setups] [-S sources] [-T msg timeout secs] [-C pid[,pid...]] [-b] [-R]\n"
            "              ws://IPv4:port/sub-path [ws://IPv4:port/sub-path ...] ws://IPv4:port/pub-path\n");
    exit(2);
}

static void parse_url(const char *url, struct url *u)
{
    char host[64];
    int port = 80;
    if (strncmp(url, "ws://", 5) != 0) usage();
    const char *rest = parse_hostport(url + 5, host, sizeof host, &port);
    if (!rest) usage();
    snprintf(u->path, sizeof u->path, "/");
    if (*rest == '/') {
        if (!path_ok(rest, sizeof u->path)) usage();
        snprintf(u->path, sizeof u->path, "%s", rest);
    }
    snprintf(u->hostport, sizeof u->hostport, "%s:%d", host, port);
    if (!ipv4_addr(&u->addr, host, port)) exit(2);
}

/* -C's list: up to MAX_PIDS pids separated by commas. */
static void parse_pids(const char *arg)
{
    char tmp[256];
    if (strlen(arg) >= sizeof tmp) usage();
    strcpy(tmp, arg);
    nserver_pids = 0;
    for (char *save = NULL, *tok = strtok_r(tmp, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        if (nserver_pids == MAX_PIDS) usage();
        server_pids[nserver_pids++] = int_arg(tok, 1, 1 << 30);
    }
    if (nserver_pids == 0) usage();
}

int main(int argc, char **argv)
{
    int opt;
    while ((opt = getopt(argc, argv, "n:s:W:d:w:P:k:S:T:C:bR")) != -1) {
        switch (opt) {
        case 'n': nsubs = int_arg(optarg, 1, 1000000); break;
        case 's': msg_size = int_arg(optarg, MIN_SIZE, 65535); break;
        case 'W': window = int_arg(optarg, 1, MAX_WINDOW); break;
        case 'd': secs = int_arg(optarg, 1, 3600); break;
        case 'w': warm_secs = int_arg(optarg, 0, 3600); break;
        case 'P': pause_secs = int_arg(optarg, 0, 3600); break;
        case 'k': max_setup = int_arg(optarg, 1, 1000000); break;
        case 'S': nsrc = int_arg(optarg, 0, 250); break;
        case 'T': msg_timeout_s = int_arg(optarg, 1, 3600); break;
        case 'C': parse_pids(optarg); break;
        case 'b': busy_poll = true; break;
        case 'R': pairs = true; break;
        default: usage();
        }
    }
    nurls = argc - optind - 1;
    if (nurls < 1 || nurls > MAX_URLS) usage();
    if (pairs && nsubs > MAX_PAIRS) {
        fprintf(stderr, "fanout: -R takes at most %d pairs\n", MAX_PAIRS);
        return 2;
    }
    for (int u = 0; u < nurls; u++) parse_url(argv[optind + u], &sub_urls[u]);
    parse_url(argv[argc - 1], &pub_url);

    signal(SIGPIPE, SIG_IGN);
    rng = xorshift32_seed();
    pad = xrealloc(NULL, (size_t)msg_size);
    for (int i = HDR_LEN; i < msg_size; i++) pad[i - HDR_LEN] = (unsigned char)('a' + i % 26);
    frame_cap = (uint32_t)msg_size + 14 > 256 ? (uint32_t)msg_size + 14 : 256;

    ngroups = pairs ? nsubs : 1;
    int nconns = nsubs + ngroups;
    conns = calloc((size_t)nconns, sizeof *conns);
    groups = calloc((size_t)ngroups, sizeof *groups);
    if (!conns || !groups) { fprintf(stderr, "fanout: out of memory\n"); return 1; }
    for (int i = 0; i < nconns; i++) conns[i].fd = -1;
    for (int i = 0; i < nsubs; i++) {
        conns[i].group = pairs ? i : 0;
        conns[i].url = i % nurls;
    }
    for (int k = 0; k < ngroups; k++) {
        struct group *g = &groups[k];
        g->pub = &conns[nsubs + k];
        g->pub->is_pub = true;
        g->pub->group = k;
        g->ring = calloc(RING, sizeof *g->ring);
        if (!g->ring) { fprintf(stderr, "fanout: out of memory\n"); return 1; }
        g->next_seq = g->base_seq = 1;
    }
    ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) { perror("fanout: epoll_create1"); return 1; }
    int nev = nconns + 16;
    struct epoll_event *evs = calloc((size_t)nev, sizeof *evs);
    if (!evs) { fprintf(stderr, "fanout: out of memory\n"); return 1; }

    t_start = now_ns();
    const int64_t deadline = t_start + (int64_t)(SETUP_TIMEOUT_S + SUBSCRIBE_TIMEOUT_S + pause_secs + warm_secs +
                                                 2 * secs + 3 * msg_timeout_s + 10) * NS;
    bool timed_out = false;
    int started = 0;
    /* -R: a sender starts when its receiver has its id (on_id) */
    if (!pairs) conn_start(groups[0].pub, nsubs);

    while (stage != SG_END) {
        int64_t t = now_ns();
        if (t > deadline) {
            fprintf(stderr, "fanout: the run took too long; giving up\n");
            timed_out = true;
            fatal = true;
        }
        if (fatal && stage != SG_PHASE) break;
        switch (stage) {
        case SG_CONNECT: {
            /* keep at most max_setup subscribers opening */
            while (started < nsubs && started - subs_settled < max_setup) {
                conn_start(&conns[started], started);
                started++;
            }
            if (subs_settled + pubs_settled >= nconns) {
                t_connected = now_ns();
                for (int k = 0; k < ngroups && !fatal; k++) {
                    if (groups[k].pub->st == ST_OPEN) continue;
                    fprintf(stderr, "fanout: %s %d did not open\n", role(groups[k].pub), k);
                    fatal = true;
                }
                if (subs_open == 0) {
                    fprintf(stderr, "fanout: no %s opened\n", pairs ? "receiver" : "subscriber");
                    fatal = true;
                }
                if (fatal) break;
                stage = SG_SUBSCRIBE;
                for (int k = 0; k < ngroups; k++) {
                    struct group *g = &groups[k];
                    g->probe_last_progress = t_connected;
                    if (g->open > 0) publish(g, true);
                    else g->probe_reached = true;
                }
            } else if (t - t_start > (int64_t)SETUP_TIMEOUT_S * NS) {
                long long no_id = 0;
                for (int i = 0; i < nsubs; i++) no_id += conns[i].st == ST_OPEN && conns[i].want_id;
                fprintf(stderr, "fanout: timed out opening connections (%lld of %d settled", subs_settled + pubs_settled,
                        nconns);
                if (pairs) fprintf(stderr, "; %lld receivers open without an id", no_id);
                fprintf(stderr, ")\n");
                fatal = true;
            }
            break;
        }
        case SG_SUBSCRIBE: {
            bool all = true;
            for (int k = 0; k < ngroups; k++) all = all && groups[k].probe_reached;
            if (all) {
                t_subscribed = t;
                /* probes are over; nothing older can come */
                for (int k = 0; k < ngroups; k++) groups[k].base_seq = groups[k].next_seq;
                printf("READY %lld %.0f\n", subs_open, (double)(t_subscribed - t_connected) / 1e6);
                fflush(stdout);
                stage = SG_PAUSE;
                t_pause_end = t + (int64_t)pause_secs * NS;
            } else if (t - t_connected > (int64_t)SUBSCRIBE_TIMEOUT_S * NS) {
                long long reached = 0;
                for (int i = 0; i < nsubs; i++) reached += conns[i].st == ST_OPEN && conns[i].last_seq > 0;
                fprintf(stderr, "fanout: after %d s only %lld of %lld %s got a message\n", SUBSCRIBE_TIMEOUT_S,
                        reached, subs_open, pairs ? "receivers" : "subscribers");
                fatal = true;
            } else {
                for (int k = 0; k < ngroups; k++) {
                    struct group *g = &groups[k];
                    if (g->probe_reached || t - g->probe_last_progress <= (int64_t)PROBE_QUIET_MS * 1000000) continue;
                    g->probe_last_progress = t;
                    publish(g, true);
                }
            }
            break;
        }
        case SG_PAUSE:
            if (t >= t_pause_end) phase_start(warm_secs > 0 ? 0 : 1);
            break;
        case SG_PHASE: {
            struct phase *ph = &phases[cur];
            if (t >= ph->t_end && ph->cpu1 == 0) {
                ph->cpu1 = cpu_seconds();
                read_server_cpu(ph);
                ph->wait1 = wait_ns;
            }
            check_timeouts(t);
            if (fatal) {
                /* a publisher is gone: this phase and the rest did not run */
                phase_finish(t);
                for (int k = cur + 1; k < 3; k++) {
                    phases[k].aborted = true;
                    if (phases[k].reported) print_phase(&phases[k]);
                }
                stage = SG_END;
            } else if (t >= ph->t_end && inflight == 0) {
                phase_finish(t);
                if (cur < 2) phase_start(cur + 1);
                else stage = SG_END;
            }
            break;
        }
        case SG_END:
            break;
        }
        if (stage == SG_END || (fatal && stage != SG_PHASE)) break;

        int64_t w0 = now_ns();
        int n = epoll_wait(ep, evs, nev, busy_poll && stage == SG_PHASE ? 0 : 10);
        /* idle: the wait, or the whole turn of the loop when it found nothing */
        wait_ns += now_ns() - (n == 0 ? t : w0);
        if (n < 0) {
            if (errno == EINTR) continue;
            perror("fanout: epoll_wait");
            break;
        }
        for (int k = 0; k < n; k++) {
            struct conn *c = &conns[evs[k].data.u32];
            if (c->st == ST_TCP || c->st == ST_UPGRADE || c->st == ST_OPEN) drive(c, evs[k].events);
        }
    }

    if (stage != SG_END) {
        /* set-up failed: report the phases as not run */
        for (int k = 0; k < 3; k++) {
            phases[k].aborted = true;
            if (phases[k].reported) print_phase(&phases[k]);
        }
    }
    /* Close every open connection with 1000 (best effort), as a client should. */
    for (int i = 0; i < nconns; i++) {
        struct conn *c = &conns[i];
        if (c->st != ST_OPEN) continue;
        static const unsigned char normal[2] = {0x03, 0xe8}; /* 1000 */
        send_frame(c, 8, normal, 2);
        if (conn_flush(c)) shutdown(c->fd, SHUT_WR);
    }
    bool ok = !fatal && !timed_out && connect_fail == 0 && errors == 0 && bad_frames == 0 && bad_seq == 0 &&
              subs_open == nsubs;
    for (int k = 0; k < 3; k++) ok = ok && phases[k].missing == 0 && phases[k].gave_up == 0;
    free(evs);
    return ok ? 0 : 1;
}
