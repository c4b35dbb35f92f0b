/*
 * loadgen.c - Gearman load generator for benchmarks/run.py.
 *
 * One process, one epoll loop over every connection, TCP_NODELAY on every
 * socket, pre-encoded request packets.  run.py compiles it with gcc into a
 * temporary directory at run time; never commit the binary.
 *
 *   loadgen submit  PORT JOBS CONNS INFLIGHT [MAX_SECONDS]
 *       pipelined SUBMIT_JOB_BG: send INFLIGHT on each connection, then one
 *       more per JOB_CREATED.  Timed from the first send to the last
 *       JOB_CREATED.  With MAX_SECONDS > 0, no new job is sent after that
 *       many seconds (the outstanding ones are still awaited and counted).
 *   loadgen drain   PORT JOBS WORKERS [PRELOAD]
 *       pre-loads JOBS background jobs (untimed, 4 pipelined connections;
 *       skipped with PRELOAD 0, when JOBS are already queued, as run.py's
 *       memory scenario S6 does), then times WORKERS worker connections
 *       draining them with
 *       CAN_DO, GRAB_JOB -> JOB_ASSIGN -> WORK_COMPLETE + GRAB_JOB ...,
 *       NO_JOB -> PRE_SLEEP, NOOP -> GRAB_JOB.  A worker is never re-polled:
 *       if jobs remain and nothing happens for STALL seconds, that is a lost
 *       wake-up and the run fails.
 *   loadgen closed  PORT CLIENTS WORKERS WARMUP_S MEASURE_S
 *       CLIENTS foreground clients in a closed loop (SUBMIT_JOB, wait for
 *       JOB_CREATED and WORK_COMPLETE, repeat) and WORKERS echo workers.
 *       Reports jobs/s and latency percentiles (submit sent -> WORK_COMPLETE
 *       received) over the MEASURE_S window after WARMUP_S.
 *
 * Payloads are 100 bytes, uniques empty, function "bench".  Output: one JSON
 * object on stdout.  "cpu" is this process's (user+sys)/wall over the timed
 * phase only (getrusage RUSAGE_SELF).  Exit status 0 on success, 1 on error
 * (the JSON then has an "error" member).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define FUNC "bench"
#define PAYLOAD_LEN 100
#define HDR 12
#define RBUF_SIZE (256 * 1024)
#define STALL_SECONDS 15.0

enum {
    CAN_DO = 1, PRE_SLEEP = 4, NOOP = 6, SUBMIT_JOB = 7, JOB_CREATED = 8,
    GRAB_JOB = 9, NO_JOB = 10, JOB_ASSIGN = 11, WORK_COMPLETE = 13,
    WORK_FAIL = 14, SUBMIT_JOB_BG = 18, ERROR_PKT = 19, WORK_EXCEPTION = 25,
};

enum role { R_SUBMIT, R_DRAIN_WORKER, R_CLIENT, R_ECHO_WORKER };
enum wstate { W_GRABBING, W_SLEEPING, W_DONE };

typedef struct conn {
    int fd;
    enum role role;
    unsigned char *rbuf;
    size_t rlen;
    unsigned char *wbuf;
    size_t wlen, wcap, woff;
    int want_out;
    /* submitter */
    long quota, sent, created;
    /* worker */
    enum wstate ws;
    int got_no_job;           /* NO_JOB received for the latest GRAB */
    /* client */
    double t_submit;
    int awaiting_created;
} conn;

static int g_ep;
static unsigned char g_payload[PAYLOAD_LEN];
static unsigned char *g_submit_bg;  /* many pre-encoded SUBMIT_JOB_BG packets back to back */
static size_t g_submit_bg_len;      /* length of one */
static long g_submit_batch = 1024;
static unsigned char g_submit_fg[HDR + sizeof(FUNC) + 1 + PAYLOAD_LEN];
static size_t g_submit_fg_len;
static char g_error[512];

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static double g_user0, g_sys0, g_user, g_sys;

static double cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    g_user = ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6;
    g_sys = ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
    return g_user + g_sys;
}

/* Start of the timed phase's CPU accounting. */
static double cpu_mark(void)
{
    double c = cpu_seconds();
    g_user0 = g_user;
    g_sys0 = g_sys;
    return c;
}

static void fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_error, sizeof g_error, fmt, ap);
    va_end(ap);
    for (char *p = g_error; *p; p++)
        if (*p == '"' || *p == '\\' || (unsigned char)*p < 32)
            *p = ' ';
    printf("{\"error\": \"%s\"}\n", g_error);
    fflush(stdout);
    exit(1);
}

static size_t encode(unsigned char *out, uint32_t type, const void *body, size_t len)
{
    uint32_t t = htonl(type), l = htonl((uint32_t)len);
    memcpy(out, "\0REQ", 4);
    memcpy(out + 4, &t, 4);
    memcpy(out + 8, &l, 4);
    if (len)
        memcpy(out + HDR, body, len);
    return HDR + len;
}

static void build_packets(void)
{
    memset(g_payload, 'x', PAYLOAD_LEN);
    unsigned char body[sizeof(FUNC) + 1 + PAYLOAD_LEN];
    size_t blen = 0;
    memcpy(body, FUNC, sizeof(FUNC)); /* "bench\0" */
    blen = sizeof(FUNC);
    body[blen++] = 0;                 /* empty unique + NUL */
    memcpy(body + blen, g_payload, PAYLOAD_LEN);
    blen += PAYLOAD_LEN;
    g_submit_bg_len = HDR + blen;
    g_submit_bg = malloc(g_submit_bg_len * g_submit_batch);
    for (long i = 0; i < g_submit_batch; i++)
        encode(g_submit_bg + i * g_submit_bg_len, SUBMIT_JOB_BG, body, blen);
    g_submit_fg_len = encode(g_submit_fg, SUBMIT_JOB, body, blen);
}

static conn *conn_open(int port, enum role role)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        fail("socket: %s", strerror(errno));
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0)
        fail("connect to port %d: %s", port, strerror(errno));
    int one = 1;
    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) < 0)
        fail("TCP_NODELAY: %s", strerror(errno));
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
        fail("O_NONBLOCK: %s", strerror(errno));
    conn *c = calloc(1, sizeof *c);
    c->fd = fd;
    c->role = role;
    c->rbuf = malloc(RBUF_SIZE);
    c->wcap = 64 * 1024;
    c->wbuf = malloc(c->wcap);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    if (epoll_ctl(g_ep, EPOLL_CTL_ADD, fd, &ev) < 0)
        fail("epoll_ctl: %s", strerror(errno));
    return c;
}

static void conn_close(conn *c)
{
    epoll_ctl(g_ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    free(c->rbuf);
    free(c->wbuf);
    free(c);
}

/* Write what we can; queue the rest and ask for EPOLLOUT. */
static void conn_flush(conn *c)
{
    while (c->woff < c->wlen) {
        ssize_t n = write(c->fd, c->wbuf + c->woff, c->wlen - c->woff);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN)
                break;
            fail("write: %s", strerror(errno));
        }
        c->woff += n;
    }
    if (c->woff == c->wlen)
        c->woff = c->wlen = 0;
    int want = c->wlen > 0;
    if (want != c->want_out) {
        struct epoll_event ev = {.events = EPOLLIN | (want ? EPOLLOUT : 0), .data.ptr = c};
        epoll_ctl(g_ep, EPOLL_CTL_MOD, c->fd, &ev);
        c->want_out = want;
    }
}

static void conn_queue(conn *c, const void *data, size_t len)
{
    if (c->wlen + len > c->wcap) {
        if (c->woff) {
            memmove(c->wbuf, c->wbuf + c->woff, c->wlen - c->woff);
            c->wlen -= c->woff;
            c->woff = 0;
        }
        while (c->wlen + len > c->wcap)
            c->wcap *= 2;
        c->wbuf = realloc(c->wbuf, c->wcap);
    }
    memcpy(c->wbuf + c->wlen, data, len);
    c->wlen += len;
}

static void conn_queue_packet(conn *c, uint32_t type, const void *a, size_t alen, const void *b, size_t blen)
{
    unsigned char hdr[HDR];
    uint32_t t = htonl(type), l = htonl((uint32_t)(alen + blen));
    memcpy(hdr, "\0REQ", 4);
    memcpy(hdr + 4, &t, 4);
    memcpy(hdr + 8, &l, 4);
    conn_queue(c, hdr, HDR);
    if (alen)
        conn_queue(c, a, alen);
    if (blen)
        conn_queue(c, b, blen);
}

/* Queue up to n more SUBMIT_JOB_BG packets within the quota. */
static void submit_more(conn *c, long n)
{
    if (n > c->quota - c->sent)
        n = c->quota - c->sent;
    while (n > 0) {
        long k = n < g_submit_batch ? n : g_submit_batch;
        conn_queue(c, g_submit_bg, k * g_submit_bg_len);
        c->sent += k;
        n -= k;
    }
}

/* ---- scenario state ---- */
static long g_completed;          /* jobs finished (drain) / created (submit) */
static double g_last_progress;
static int g_stop_sending;        /* submit: MAX_SECONDS reached */
static double g_warm_start, g_measure_end;  /* closed loop window */
static long g_window_jobs;
static uint32_t *g_lat;
static long g_lat_n, g_lat_cap;

typedef void (*packet_fn)(conn *c, uint32_t type, unsigned char *body, uint32_t len);

static void error_packet(unsigned char *body, uint32_t len)
{
    char msg[256];
    size_t n = len < sizeof msg - 1 ? len : sizeof msg - 1;
    memcpy(msg, body, n);
    msg[n] = 0;
    for (size_t i = 0; i < n; i++)
        if (msg[i] == 0)
            msg[i] = ' ';
    fail("server sent ERROR: %s", msg);
}

static void on_submit_packet(conn *c, uint32_t type, unsigned char *body, uint32_t len)
{
    (void)body; (void)len;
    if (type == JOB_CREATED) {
        c->created++;
        g_completed++;
    } else if (type == ERROR_PKT) {
        error_packet(body, len);
    } else {
        fail("submitter got unexpected packet type %u", type);
    }
}

static long g_drain_jobs;

static void on_drain_worker_packet(conn *c, uint32_t type, unsigned char *body, uint32_t len)
{
    switch (type) {
    case JOB_ASSIGN: {
        unsigned char *p = memchr(body, 0, len);
        if (!p)
            fail("malformed JOB_ASSIGN");
        size_t hlen = p - body;
        unsigned char *f = memchr(p + 1, 0, len - hlen - 1);
        if (!f)
            fail("malformed JOB_ASSIGN");
        size_t off = f + 1 - body;
        conn_queue_packet(c, WORK_COMPLETE, body, hlen + 1, body + off, len - off);
        conn_queue_packet(c, GRAB_JOB, NULL, 0, NULL, 0);
        c->ws = W_GRABBING;
        c->got_no_job = 0;
        g_completed++;
        g_last_progress = now();
        break;
    }
    case NO_JOB:
        c->got_no_job = 1;
        conn_queue_packet(c, PRE_SLEEP, NULL, 0, NULL, 0);
        c->ws = W_SLEEPING;
        break;
    case NOOP:
        if (c->ws == W_SLEEPING) {
            conn_queue_packet(c, GRAB_JOB, NULL, 0, NULL, 0);
            c->ws = W_GRABBING;
            c->got_no_job = 0;
        } /* else: a GRAB is already outstanding; its reply will come. */
        break;
    case ERROR_PKT:
        error_packet(body, len);
        break;
    default:
        fail("worker got unexpected packet type %u", type);
    }
}

static void on_echo_worker_packet(conn *c, uint32_t type, unsigned char *body, uint32_t len)
{
    on_drain_worker_packet(c, type, body, len);
}

static void on_client_packet(conn *c, uint32_t type, unsigned char *body, uint32_t len)
{
    switch (type) {
    case JOB_CREATED:
        if (!c->awaiting_created)
            fail("client got an unexpected JOB_CREATED");
        c->awaiting_created = 0;
        break;
    case WORK_COMPLETE: {
        double t = now();
        if (c->awaiting_created)
            fail("WORK_COMPLETE before JOB_CREATED");
        if (c->t_submit >= g_warm_start && t <= g_measure_end) {
            g_window_jobs++;
            if (g_lat_n == g_lat_cap) {
                g_lat_cap = g_lat_cap ? g_lat_cap * 2 : 1 << 20;
                g_lat = realloc(g_lat, g_lat_cap * sizeof *g_lat);
            }
            g_lat[g_lat_n++] = (uint32_t)((t - c->t_submit) * 1e6 + 0.5);
        }
        g_completed++;
        g_last_progress = t;
        if (t < g_measure_end) {
            conn_queue(c, g_submit_fg, g_submit_fg_len);
            c->t_submit = t;
            c->awaiting_created = 1;
        }
        break;
    }
    case WORK_FAIL:
    case WORK_EXCEPTION:
        fail("job failed (type %u)", type);
        break;
    case ERROR_PKT:
        error_packet(body, len);
        break;
    default:
        fail("client got unexpected packet type %u", type);
    }
}

static void handle_readable(conn *c)
{
    for (;;) {
        ssize_t n = read(c->fd, c->rbuf + c->rlen, RBUF_SIZE - c->rlen);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN)
                break;
            fail("read: %s", strerror(errno));
        }
        if (n == 0)
            fail("server closed a connection");
        c->rlen += n;
        size_t off = 0;
        long before = c->created;
        while (c->rlen - off >= HDR) {
            unsigned char *h = c->rbuf + off;
            if (memcmp(h, "\0RES", 4) != 0)
                fail("bad magic from server");
            uint32_t type, len;
            memcpy(&type, h + 4, 4);
            memcpy(&len, h + 8, 4);
            type = ntohl(type);
            len = ntohl(len);
            if (len > RBUF_SIZE - HDR)
                fail("reply too large (%u bytes)", len);
            if (c->rlen - off < HDR + (size_t)len)
                break;
            switch (c->role) {
            case R_SUBMIT: on_submit_packet(c, type, h + HDR, len); break;
            case R_DRAIN_WORKER: on_drain_worker_packet(c, type, h + HDR, len); break;
            case R_ECHO_WORKER: on_echo_worker_packet(c, type, h + HDR, len); break;
            case R_CLIENT: on_client_packet(c, type, h + HDR, len); break;
            }
            off += HDR + len;
        }
        if (off) {
            memmove(c->rbuf, c->rbuf + off, c->rlen - off);
            c->rlen -= off;
        }
        if (c->role == R_SUBMIT && c->created > before) {
            g_last_progress = now();
            if (!g_stop_sending)
                submit_more(c, c->created - before);
        }
        if (n < RBUF_SIZE / 2)
            break; /* probably drained; epoll will tell us otherwise */
    }
    conn_flush(c);
}

/* Run the loop until done() says so; fail on a stall. */
static void loop(int (*done)(void), double deadline, conn **all, int nconn, const char *what)
{
    struct epoll_event evs[64];
    g_last_progress = now();
    while (!done()) {
        int n = epoll_wait(g_ep, evs, 64, 200);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            fail("epoll_wait: %s", strerror(errno));
        }
        for (int i = 0; i < n; i++) {
            conn *c = evs[i].data.ptr;
            if (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP))
                handle_readable(c);
            else if (evs[i].events & EPOLLOUT)
                conn_flush(c);
        }
        double t = now();
        if (deadline > 0 && t >= deadline)
            return;
        if (t - g_last_progress > STALL_SECONDS) {
            int sleeping = 0;
            for (int i = 0; i < nconn; i++)
                sleeping += all[i]->ws == W_SLEEPING;
            fail("%s stalled: no progress for %.0f s after %ld jobs (%d of %d connections sleeping after PRE_SLEEP%s)",
                 what, STALL_SECONDS, g_completed, sleeping, nconn,
                 sleeping ? "; lost wake-up?" : "");
        }
    }
}

static long g_target;
static conn **g_conns;
static int g_nconns;

static int submit_done(void)
{
    if (g_completed >= g_target)
        return 1;
    if (!g_stop_sending)
        return 0;
    for (int i = 0; i < g_nconns; i++)
        if (g_conns[i]->created < g_conns[i]->sent)
            return 0;
    return 1;
}

static double g_submit_deadline;

static int submit_done_with_deadline(void)
{
    if (!g_stop_sending && g_submit_deadline > 0 && now() >= g_submit_deadline)
        g_stop_sending = 1;
    return submit_done();
}

/* Pipelined SUBMIT_JOB_BG; returns elapsed seconds; jobs created in g_completed. */
static double run_submit(int port, long jobs, int nconn, long inflight, double max_seconds)
{
    conn **cs = calloc(nconn, sizeof *cs);
    for (int i = 0; i < nconn; i++) {
        cs[i] = conn_open(port, R_SUBMIT);
        cs[i]->quota = jobs / nconn + (i < jobs % nconn);
    }
    g_conns = cs;
    g_nconns = nconn;
    g_target = jobs;
    g_completed = 0;
    g_stop_sending = 0;
    double t0 = now();
    g_submit_deadline = max_seconds > 0 ? t0 + max_seconds : 0;
    for (int i = 0; i < nconn; i++) {
        submit_more(cs[i], inflight);
        conn_flush(cs[i]);
    }
    loop(submit_done_with_deadline, 0, cs, nconn, "submit");
    double el = now() - t0;
    for (int i = 0; i < nconn; i++)
        conn_close(cs[i]);
    free(cs);
    return el;
}

static int drain_done(void)
{
    if (g_completed < g_drain_jobs)
        return 0;
    for (int i = 0; i < g_nconns; i++)
        if (!g_conns[i]->got_no_job)
            return 0;
    return 1;
}

static int never_done(void) { return 0; }

static void print_result(const char *mode, long jobs, double elapsed, double cpu, const char *extra)
{
    printf("{\"mode\": \"%s\", \"jobs\": %ld, \"elapsed\": %.6f, \"rate\": %.1f, "
           "\"cpu_seconds\": %.4f, \"cpu\": %.4f, \"cpu_user\": %.4f, \"cpu_sys\": %.4f%s}\n",
           mode, jobs, elapsed, elapsed > 0 ? jobs / elapsed : 0.0, cpu,
           elapsed > 0 ? cpu / elapsed : 0.0, g_user - g_user0, g_sys - g_sys0, extra ? extra : "");
    fflush(stdout);
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static double pct(double p)
{
    if (!g_lat_n)
        return 0;
    long i = (long)(p / 100.0 * g_lat_n);
    if (i >= g_lat_n)
        i = g_lat_n - 1;
    return g_lat[i];
}

static void usage(void)
{
    fprintf(stderr,
            "usage: loadgen submit PORT JOBS CONNS INFLIGHT [MAX_SECONDS]\n"
            "       loadgen drain  PORT JOBS WORKERS [PRELOAD]\n"
            "       loadgen closed PORT CLIENTS WORKERS WARMUP_S MEASURE_S\n");
    exit(2);
}

int main(int argc, char **argv)
{
    if (argc < 3)
        usage();
    const char *mode = argv[1];
    int port = atoi(argv[2]);
    g_ep = epoll_create1(0);
    build_packets();

    if (!strcmp(mode, "submit")) {
        if (argc < 6)
            usage();
        long jobs = atol(argv[3]);
        int nconn = atoi(argv[4]);
        long inflight = atol(argv[5]);
        double max_s = argc > 6 ? atof(argv[6]) : 0;
        double c0 = cpu_mark();
        double el = run_submit(port, jobs, nconn, inflight, max_s);
        print_result("submit", g_completed, el, cpu_seconds() - c0, NULL);
    } else if (!strcmp(mode, "drain")) {
        if (argc < 5)
            usage();
        long jobs = atol(argv[3]);
        int nw = atoi(argv[4]);
        int preload = argc > 5 ? atoi(argv[5]) : 1;
        double pre = preload ? run_submit(port, jobs, 4, 100, 0) : 0.0;
        if (preload && g_completed != jobs)
            fail("pre-load created %ld of %ld jobs", g_completed, jobs);
        conn **ws = calloc(nw, sizeof *ws);
        for (int i = 0; i < nw; i++)
            ws[i] = conn_open(port, R_DRAIN_WORKER);
        g_conns = ws;
        g_nconns = nw;
        g_drain_jobs = jobs;
        g_completed = 0;
        double c0 = cpu_mark(), t0 = now();
        for (int i = 0; i < nw; i++) {
            conn_queue_packet(ws[i], CAN_DO, FUNC, sizeof(FUNC) - 1, NULL, 0);
            conn_queue_packet(ws[i], GRAB_JOB, NULL, 0, NULL, 0);
            ws[i]->ws = W_GRABBING;
            conn_flush(ws[i]);
        }
        loop(drain_done, 0, ws, nw, "drain");
        double el = now() - t0;
        char extra[64];
        snprintf(extra, sizeof extra, ", \"preload_seconds\": %.3f", pre);
        print_result("drain", g_completed, el, cpu_seconds() - c0, extra);
    } else if (!strcmp(mode, "closed")) {
        if (argc < 7)
            usage();
        int nc = atoi(argv[3]), nw = atoi(argv[4]);
        double warm = atof(argv[5]), meas = atof(argv[6]);
        conn **all = calloc(nc + nw, sizeof *all);
        for (int i = 0; i < nw; i++) {
            all[i] = conn_open(port, R_ECHO_WORKER);
            conn_queue_packet(all[i], CAN_DO, FUNC, sizeof(FUNC) - 1, NULL, 0);
            conn_queue_packet(all[i], GRAB_JOB, NULL, 0, NULL, 0);
            all[i]->ws = W_GRABBING;
            conn_flush(all[i]);
        }
        for (int i = 0; i < nc; i++)
            all[nw + i] = conn_open(port, R_CLIENT);
        g_conns = all;
        g_nconns = nc + nw;
        double t0 = now();
        g_warm_start = t0 + warm;
        g_measure_end = g_warm_start + meas;
        for (int i = 0; i < nc; i++) {
            conn *c = all[nw + i];
            conn_queue(c, g_submit_fg, g_submit_fg_len);
            c->t_submit = t0;
            c->awaiting_created = 1;
            conn_flush(c);
        }
        /* Warm-up: run until the window opens, then measure CPU over the window only. */
        loop(never_done, g_warm_start, all, nw, "closed loop (warm-up)");
        double c0 = cpu_mark();
        loop(never_done, g_measure_end, all, nw, "closed loop");
        double c1 = cpu_seconds();
        qsort(g_lat, g_lat_n, sizeof *g_lat, cmp_u32);
        char extra[256];
        snprintf(extra, sizeof extra,
                 ", \"p50_us\": %.0f, \"p90_us\": %.0f, \"p99_us\": %.0f, \"max_us\": %.0f, \"samples\": %ld",
                 pct(50), pct(90), pct(99), g_lat_n ? (double)g_lat[g_lat_n - 1] : 0.0, g_lat_n);
        print_result("closed", g_window_jobs, meas, c1 - c0, extra);
    } else {
        usage();
    }
    return 0;
}

