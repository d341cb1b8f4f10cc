/*
 * loadgen.c - one-thread epoll load generator for the anyio-iocp benchmarks.
 *
 * It is the same binary for every server backend, so differences in the
 * results come from the server.  Every mode prints exactly one line of JSON
 * on stdout.  Sockets are non-blocking and epoll is used level-triggered.
 *
 *   loadgen echo  HOST PORT CONNS MSGSIZE SECONDS
 *   loadgen churn HOST PORT CONCURRENCY SECONDS
 *   loadgen bulk  HOST PORT CONNS SECONDS
 *   loadgen storm HOST PORT N [TIMEOUT_SECONDS]
 *
 * Only loopback targets (127.0.0.0/8, ::1) are accepted.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_EVENTS 1024
#define BULK_CHUNK 65536
#define RTT_SAMPLE_CAP (1u << 20)
#define MAX_ERRNO 4096

static const char HELLO[] = "hello\n";
static const char HELLO_BACK[] = "hello back\n";
#define HELLO_LEN (sizeof(HELLO) - 1)
#define HELLO_BACK_LEN (sizeof(HELLO_BACK) - 1)

/* ------------------------------------------------------------------ */
/* small utilities                                                     */
/* ------------------------------------------------------------------ */

static void die(const char *what) {
    fprintf(stderr, "loadgen: %s: %s\n", what, strerror(errno));
    exit(2);
}

static void die_msg(const char *msg) {
    fprintf(stderr, "loadgen: %s\n", msg);
    exit(2);
}

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static double ns_to_s(uint64_t ns) { return (double)ns / 1e9; }

static long parse_long(const char *s, const char *name, long min) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || v < min) {
        fprintf(stderr, "loadgen: bad %s: %s\n", name, s);
        exit(2);
    }
    return v;
}

static double parse_seconds(const char *s) {
    char *end;
    double v = strtod(s, &end);
    if (*end || v <= 0) {
        fprintf(stderr, "loadgen: bad SECONDS: %s\n", s);
        exit(2);
    }
    return v;
}

/* Milliseconds until `deadline`, rounded up, for epoll_wait. */
static int ms_until(uint64_t deadline) {
    uint64_t t = now_ns();
    if (t >= deadline) return 0;
    return (int)((deadline - t + 999999u) / 1000000u);
}

/* Ready events, or 0 once the deadline has passed (EINTR is retried). */
static int wait_events(int ep, struct epoll_event *evs, uint64_t deadline) {
    for (;;) {
        int timeout = ms_until(deadline);
        if (timeout == 0) return 0;
        int k = epoll_wait(ep, evs, MAX_EVENTS, timeout);
        if (k >= 0) return k;
        if (errno != EINTR) die("epoll_wait");
    }
}

static void raise_nofile(rlim_t want) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) die("getrlimit");
    if (rl.rlim_cur >= want) return;
    if (rl.rlim_max < want) rl.rlim_max = want; /* only works as root */
    rl.rlim_cur = want;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
        getrlimit(RLIMIT_NOFILE, &rl);
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

/* xorshift64 for reservoir sampling. */
static uint64_t rng_state = 0x9e3779b97f4a7c15u;
static uint64_t rng_next(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

/* ------------------------------------------------------------------ */
/* target address and connections                                     */
/* ------------------------------------------------------------------ */

static struct sockaddr_storage target;
static socklen_t target_len;

static void resolve_target(const char *host, const char *port) {
    struct addrinfo hints = {0}, *res;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
    int rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0) {
        fprintf(stderr, "loadgen: bad address %s:%s: %s\n", host, port,
                gai_strerror(rc));
        exit(2);
    }
    int loopback = 0;
    if (res->ai_family == AF_INET) {
        const struct sockaddr_in *a = (const void *)res->ai_addr;
        loopback = (ntohl(a->sin_addr.s_addr) >> 24) == 127;
    } else if (res->ai_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const void *)res->ai_addr;
        loopback = IN6_IS_ADDR_LOOPBACK(&a->sin6_addr);
    }
    if (!loopback) die_msg("only loopback targets are allowed");
    memcpy(&target, res->ai_addr, res->ai_addrlen);
    target_len = res->ai_addrlen;
    freeaddrinfo(res);
}

/* Start a non-blocking connect.  Returns the fd, or -1 with *err set. */
static int start_connect(int *err) {
    int fd = socket(target.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        *err = errno;
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(fd, (const struct sockaddr *)&target, target_len) != 0 &&
        errno != EINPROGRESS) {
        *err = errno;
        close(fd);
        return -1;
    }
    return fd;
}

static int socket_error(int fd) {
    int err = 0;
    socklen_t len = sizeof(err);
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) return errno;
    return err;
}

static void ep_ctl(int ep, int op, int fd, uint32_t events, uint32_t id) {
    struct epoll_event ev = {.events = events, .data.u32 = id};
    if (epoll_ctl(ep, op, fd, &ev) != 0) die("epoll_ctl");
}

/*
 * Connect n sockets (all at once) and wait until every one is established.
 * Used by the echo and bulk modes, where a failed setup is fatal.
 */
static void connect_all(int ep, int *fds, int n) {
    for (int i = 0; i < n; i++) {
        int err;
        fds[i] = start_connect(&err);
        if (fds[i] < 0) {
            errno = err;
            die("connect");
        }
        ep_ctl(ep, EPOLL_CTL_ADD, fds[i], EPOLLOUT, (uint32_t)i);
    }
    int pending = n;
    struct epoll_event evs[MAX_EVENTS];
    uint64_t deadline = now_ns() + 10ull * 1000000000u;
    while (pending > 0) {
        int k = wait_events(ep, evs, deadline);
        if (k == 0) die_msg("timed out connecting");
        for (int j = 0; j < k; j++) {
            int i = (int)evs[j].data.u32;
            int err = socket_error(fds[i]);
            if (err) {
                errno = err;
                die("connect");
            }
            ep_ctl(ep, EPOLL_CTL_MOD, fds[i], 0, (uint32_t)i); /* park */
            pending--;
        }
    }
}

/* ------------------------------------------------------------------ */
/* failure accounting (churn, storm, echo)                             */
/* ------------------------------------------------------------------ */

struct failures {
    uint64_t by_errno[MAX_ERRNO];
    uint64_t eof_before_reply; /* peer closed before the full reply */
    uint64_t wrong_reply;      /* reply content differs */
    uint64_t timeout;          /* storm: still unanswered at the deadline */
    uint64_t total;
};

static void fail_errno(struct failures *f, int err) {
    f->by_errno[(err > 0 && err < MAX_ERRNO) ? err : 0]++;
    f->total++;
}

static void print_failures(const struct failures *f) {
    printf("\"failures\":%llu,\"failures_by_kind\":{", (unsigned long long)f->total);
    const char *sep = "";
    for (int e = 0; e < MAX_ERRNO; e++) {
        if (!f->by_errno[e]) continue;
        const char *name = e ? strerrorname_np(e) : NULL;
        if (name)
            printf("%s\"%s\":%llu", sep, name, (unsigned long long)f->by_errno[e]);
        else
            printf("%s\"errno_%d\":%llu", sep, e, (unsigned long long)f->by_errno[e]);
        sep = ",";
    }
    if (f->eof_before_reply) {
        printf("%s\"eof_before_reply\":%llu", sep, (unsigned long long)f->eof_before_reply);
        sep = ",";
    }
    if (f->wrong_reply) {
        printf("%s\"wrong_reply\":%llu", sep, (unsigned long long)f->wrong_reply);
        sep = ",";
    }
    if (f->timeout) printf("%s\"timeout\":%llu", sep, (unsigned long long)f->timeout);
    printf("}");
}

/* ------------------------------------------------------------------ */
/* echo: ping-pong round trips                                         */
/* ------------------------------------------------------------------ */

struct echo_conn {
    int fd;
    uint32_t seq;   /* round number, part of the payload pattern */
    size_t sent;    /* bytes of this round's message sent so far */
    size_t rcvd;    /* bytes of it echoed back so far */
    uint64_t t0;    /* when this round started */
    int want_out;   /* EPOLLOUT currently requested */
    int dead;
};

/* Payload byte `off` of round `seq` on connection `id`. */
static inline uint8_t echo_byte(uint32_t id, uint32_t seq, size_t off) {
    return (uint8_t)(off * 131u + seq * 31u + id * 7u + 1u);
}

static void echo_fill(uint8_t *buf, uint32_t id, uint32_t seq, size_t off, size_t len) {
    for (size_t i = 0; i < len; i++) buf[i] = echo_byte(id, seq, off + i);
}

/* Send as much of the current message as the kernel takes. 0 ok, else errno. */
static int echo_send(int ep, struct echo_conn *c, uint32_t id, size_t msgsize,
                     uint8_t *scratch) {
    while (c->sent < msgsize) {
        size_t len = msgsize - c->sent;
        if (len > BULK_CHUNK) len = BULK_CHUNK;
        echo_fill(scratch, id, c->seq, c->sent, len);
        ssize_t n = send(c->fd, scratch, len, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) break;
            return errno;
        }
        c->sent += (size_t)n;
    }
    int want_out = c->sent < msgsize ? 1 : 0;
    if (want_out != c->want_out) {
        ep_ctl(ep, EPOLL_CTL_MOD, c->fd, EPOLLIN | (want_out ? EPOLLOUT : 0), id);
        c->want_out = want_out;
    }
    return 0;
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

static int mode_echo(int conns, size_t msgsize, double seconds) {
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) die("epoll_create1");
    raise_nofile((rlim_t)conns + 64);
    int *fds = calloc((size_t)conns, sizeof(int));
    struct echo_conn *cs = calloc((size_t)conns, sizeof(*cs));
    uint64_t *samples = malloc(RTT_SAMPLE_CAP * sizeof(uint64_t));
    uint8_t *scratch = malloc(BULK_CHUNK);
    uint8_t *rbuf = malloc(BULK_CHUNK);
    if (!fds || !cs || !samples || !scratch || !rbuf) die_msg("out of memory");
    connect_all(ep, fds, conns);

    struct failures fails = {0};
    uint64_t ops = 0, nsamples = 0;
    uint64_t t_start = now_ns();
    uint64_t deadline = t_start + (uint64_t)(seconds * 1e9);
    int alive = conns;
    for (int i = 0; i < conns; i++) {
        cs[i].fd = fds[i];
        cs[i].want_out = -1; /* parked by connect_all: force the first MOD */
        cs[i].t0 = now_ns();
        int err = echo_send(ep, &cs[i], (uint32_t)i, msgsize, scratch);
        if (err) {
            fail_errno(&fails, err);
            cs[i].dead = 1;
            close(cs[i].fd);
            alive--;
        }
    }

    struct epoll_event evs[MAX_EVENTS];
    while (alive > 0) {
        int k = wait_events(ep, evs, deadline);
        if (k == 0) break;
        for (int j = 0; j < k; j++) {
            uint32_t id = evs[j].data.u32;
            struct echo_conn *c = &cs[id];
            if (c->dead) continue;
            int err = 0;
            if (evs[j].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
                ssize_t n = recv(c->fd, rbuf, BULK_CHUNK, 0);
                if (n == 0) {
                    c->dead = 1;
                    fails.eof_before_reply++;
                    fails.total++;
                } else if (n < 0) {
                    if (errno != EAGAIN && errno != EWOULDBLOCK) err = errno;
                } else if (c->rcvd + (size_t)n > c->sent) {
                    c->dead = 1; /* more bytes than we sent: protocol error */
                    fails.wrong_reply++;
                    fails.total++;
                } else {
                    for (ssize_t b = 0; b < n; b++) {
                        if (rbuf[b] != echo_byte(id, c->seq, c->rcvd + (size_t)b)) {
                            c->dead = 1;
                            fails.wrong_reply++;
                            fails.total++;
                            break;
                        }
                    }
                    c->rcvd += (size_t)n;
                    if (!c->dead && c->rcvd == msgsize) {
                        uint64_t t = now_ns();
                        uint64_t rtt = t - c->t0;
                        if (t <= deadline) ops++;
                        if (nsamples < RTT_SAMPLE_CAP) {
                            samples[nsamples] = rtt;
                        } else {
                            uint64_t r = rng_next() % (nsamples + 1);
                            if (r < RTT_SAMPLE_CAP) samples[r] = rtt;
                        }
                        nsamples++;
                        c->seq++;
                        c->sent = c->rcvd = 0;
                        c->t0 = t;
                        err = echo_send(ep, c, id, msgsize, scratch);
                    }
                }
            }
            if (!c->dead && !err && (evs[j].events & EPOLLOUT))
                err = echo_send(ep, c, id, msgsize, scratch);
            if (err) {
                fail_errno(&fails, err);
                c->dead = 1;
            }
            if (c->dead) {
                close(c->fd);
                alive--;
            }
        }
    }
    uint64_t t_end = now_ns();
    if (t_end > deadline) t_end = deadline; /* rounds finishing later were not counted */
    double elapsed = ns_to_s(t_end - t_start);

    size_t kept = nsamples < RTT_SAMPLE_CAP ? (size_t)nsamples : RTT_SAMPLE_CAP;
    qsort(samples, kept, sizeof(uint64_t), cmp_u64);
    double med = kept ? (double)samples[kept / 2] / 1e3 : 0.0;
    double p99 = kept ? (double)samples[(size_t)((double)(kept - 1) * 0.99)] / 1e3 : 0.0;

    printf("{\"mode\":\"echo\",\"conns\":%d,\"msgsize\":%zu,\"seconds\":%.3f,"
           "\"ops\":%llu,\"ops_per_s\":%.1f,\"rtt_median_us\":%.1f,\"rtt_p99_us\":%.1f,",
           conns, msgsize, elapsed, (unsigned long long)ops, (double)ops / elapsed,
           med, p99);
    print_failures(&fails);
    printf("}\n");
    return 0;
}

/* ------------------------------------------------------------------ */
/* hello exchange: connect, send "hello\n", read "hello back\n", close */
/* (shared by churn and storm)                                         */
/* ------------------------------------------------------------------ */

enum hello_phase { HP_IDLE, HP_CONNECTING, HP_WAIT_REPLY };
enum hello_result { HR_PENDING, HR_OK, HR_FAILED };

struct hello_conn {
    int fd;
    enum hello_phase phase;
    size_t rcvd;
    char buf[HELLO_BACK_LEN + 1];
};

/* Begin an exchange; on immediate failure it is recorded and HR_FAILED returned. */
static enum hello_result hello_start(int ep, struct hello_conn *c, uint32_t id,
                                     struct failures *f) {
    int err;
    c->fd = start_connect(&err);
    c->rcvd = 0;
    if (c->fd < 0) {
        fail_errno(f, err);
        c->phase = HP_IDLE;
        return HR_FAILED;
    }
    c->phase = HP_CONNECTING;
    ep_ctl(ep, EPOLL_CTL_ADD, c->fd, EPOLLOUT, id);
    return HR_PENDING;
}

/* Drive an exchange on readiness; closes the socket when it is over. */
static enum hello_result hello_event(int ep, struct hello_conn *c, uint32_t id,
                                     struct failures *f) {
    enum hello_result res = HR_PENDING;
    if (c->phase == HP_CONNECTING) {
        int err = socket_error(c->fd);
        if (!err) {
            ssize_t n = send(c->fd, HELLO, HELLO_LEN, MSG_NOSIGNAL);
            if (n == (ssize_t)HELLO_LEN) {
                c->phase = HP_WAIT_REPLY;
                ep_ctl(ep, EPOLL_CTL_MOD, c->fd, EPOLLIN, id);
                return HR_PENDING;
            }
            /* a fresh socket always takes 6 bytes; a short write is an error */
            err = n < 0 ? errno : EIO;
        }
        fail_errno(f, err);
        res = HR_FAILED;
    } else if (c->phase == HP_WAIT_REPLY) {
        ssize_t n = recv(c->fd, c->buf + c->rcvd, sizeof(c->buf) - c->rcvd, 0);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) return HR_PENDING;
            fail_errno(f, errno);
            res = HR_FAILED;
        } else if (n == 0) {
            f->eof_before_reply++;
            f->total++;
            res = HR_FAILED;
        } else {
            c->rcvd += (size_t)n;
            if (memcmp(c->buf, HELLO_BACK, c->rcvd < HELLO_BACK_LEN ? c->rcvd : HELLO_BACK_LEN) != 0 ||
                c->rcvd > HELLO_BACK_LEN) {
                f->wrong_reply++;
                f->total++;
                res = HR_FAILED;
            } else if (c->rcvd == HELLO_BACK_LEN) {
                res = HR_OK;
            } else {
                return HR_PENDING;
            }
        }
    }
    close(c->fd); /* client-initiated close (FIN, or RST if unread data) */
    c->fd = -1;
    c->phase = HP_IDLE;
    return res;
}

/* ------------------------------------------------------------------ */
/* churn: CONCURRENCY back-to-back exchange loops                     */
/* ------------------------------------------------------------------ */

static int mode_churn(int concurrency, double seconds) {
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) die("epoll_create1");
    raise_nofile((rlim_t)concurrency + 64);
    struct hello_conn *cs = calloc((size_t)concurrency, sizeof(*cs));
    if (!cs) die_msg("out of memory");
    struct failures fails = {0};
    uint64_t ok = 0;
    uint64_t t_start = now_ns();
    uint64_t deadline = t_start + (uint64_t)(seconds * 1e9);
    struct epoll_event evs[MAX_EVENTS];

    for (;;) {
        /*
         * (Re)start idle slots.  A slot whose connect() failed at once stays
         * idle until the next loop turn, so an immediate error (e.g. no free
         * ephemeral port) cannot turn into a busy loop.
         */
        int idle = 0;
        for (int i = 0; i < concurrency; i++)
            if (cs[i].phase == HP_IDLE &&
                hello_start(ep, &cs[i], (uint32_t)i, &fails) != HR_PENDING)
                idle++;
        int timeout = ms_until(deadline);
        if (timeout == 0) break;
        if (idle && timeout > 1) timeout = 1;
        int k = epoll_wait(ep, evs, MAX_EVENTS, timeout);
        if (k < 0) {
            if (errno == EINTR) continue;
            die("epoll_wait");
        }
        uint64_t t = now_ns();
        for (int j = 0; j < k; j++) {
            uint32_t id = evs[j].data.u32;
            if (cs[id].phase == HP_IDLE) continue;
            enum hello_result r = hello_event(ep, &cs[id], id, &fails);
            if (r == HR_OK && t <= deadline) ok++;
        }
    }
    double elapsed = ns_to_s(deadline - t_start);
    printf("{\"mode\":\"churn\",\"concurrency\":%d,\"seconds\":%.3f,"
           "\"exchanges\":%llu,\"exchanges_per_s\":%.1f,",
           concurrency, elapsed, (unsigned long long)ok, (double)ok / elapsed);
    print_failures(&fails);
    printf("}\n");
    return 0;
}

/* ------------------------------------------------------------------ */
/* bulk: one-way 64 KiB writes into a sink                             */
/* ------------------------------------------------------------------ */

/*
 * Honest window: bytes "written" are only bytes the kernel accepted into our
 * send buffer, and up to several MB can sit in socket buffers that the
 * server has not read yet.  So after SECONDS of writing we shutdown(SHUT_WR)
 * every connection and keep the clock running until the server has read
 * everything and closed its side (we see EOF).  MB/s = bytes written /
 * (write time + drain time), i.e. bytes the server actually consumed.
 */
static int mode_bulk(int conns, double seconds) {
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) die("epoll_create1");
    raise_nofile((rlim_t)conns + 64);
    int *fds = calloc((size_t)conns, sizeof(int));
    uint8_t *chunk = malloc(BULK_CHUNK);
    if (!fds || !chunk) die_msg("out of memory");
    for (size_t i = 0; i < BULK_CHUNK; i++) chunk[i] = (uint8_t)(i * 7u);
    connect_all(ep, fds, conns);
    for (int i = 0; i < conns; i++) ep_ctl(ep, EPOLL_CTL_MOD, fds[i], EPOLLOUT, (uint32_t)i);

    uint64_t bytes = 0;
    struct failures fails = {0};
    uint64_t t_start = now_ns();
    uint64_t deadline = t_start + (uint64_t)(seconds * 1e9);
    struct epoll_event evs[MAX_EVENTS];
    int alive = conns;
    char *dead = calloc((size_t)conns, 1);
    if (!dead) die_msg("out of memory");

    while (alive > 0) {
        int k = wait_events(ep, evs, deadline);
        if (k == 0) break;
        for (int j = 0; j < k; j++) {
            uint32_t id = evs[j].data.u32;
            if (dead[id]) continue;
            ssize_t n = send(fds[id], chunk, BULK_CHUNK, MSG_NOSIGNAL);
            if (n > 0) {
                bytes += (uint64_t)n;
            } else if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
                fail_errno(&fails, errno);
                dead[id] = 1;
                close(fds[id]);
                alive--;
            }
        }
    }
    uint64_t t_written = now_ns();

    /* drain: half-close and wait for the sink to read everything and close */
    int open_conns = 0;
    for (int i = 0; i < conns; i++) {
        if (dead[i]) continue;
        shutdown(fds[i], SHUT_WR);
        ep_ctl(ep, EPOLL_CTL_MOD, fds[i], EPOLLIN, (uint32_t)i);
        open_conns++;
    }
    uint64_t drain_deadline = now_ns() + 30ull * 1000000000u;
    char sink[512];
    while (open_conns > 0) {
        int timeout = ms_until(drain_deadline);
        if (timeout == 0) {
            fails.timeout += (uint64_t)open_conns;
            fails.total += (uint64_t)open_conns;
            break;
        }
        int k = epoll_wait(ep, evs, MAX_EVENTS, timeout);
        if (k < 0) {
            if (errno == EINTR) continue;
            die("epoll_wait");
        }
        for (int j = 0; j < k; j++) {
            uint32_t id = evs[j].data.u32;
            ssize_t n = recv(fds[id], sink, sizeof(sink), 0);
            if (n > 0 || (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))) continue;
            if (n < 0) fail_errno(&fails, errno);
            close(fds[id]);
            open_conns--;
        }
    }
    uint64_t t_end = now_ns();
    double elapsed = ns_to_s(t_end - t_start);
    printf("{\"mode\":\"bulk\",\"conns\":%d,\"seconds\":%.3f,\"write_seconds\":%.3f,"
           "\"drain_seconds\":%.3f,\"bytes\":%llu,\"mb_per_s\":%.1f,",
           conns, elapsed, ns_to_s(t_written - t_start), ns_to_s(t_end - t_written),
           (unsigned long long)bytes, (double)bytes / 1e6 / elapsed);
    print_failures(&fails);
    printf("}\n");
    return 0;
}

/* ------------------------------------------------------------------ */
/* storm: N simultaneous connections, one exchange each                */
/* ------------------------------------------------------------------ */

static int mode_storm(int n, double timeout_s) {
    raise_nofile((rlim_t)n + 64);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) die("epoll_create1");
    struct hello_conn *cs = calloc((size_t)n, sizeof(*cs));
    if (!cs) die_msg("out of memory");
    struct failures fails = {0};
    uint64_t answered = 0;
    int pending = 0;

    uint64_t t_start = now_ns();
    for (int i = 0; i < n; i++)
        if (hello_start(ep, &cs[i], (uint32_t)i, &fails) == HR_PENDING) pending++;
    uint64_t t_connected = now_ns();
    uint64_t t_last = t_connected;
    uint64_t deadline = t_start + (uint64_t)(timeout_s * 1e9);
    struct epoll_event evs[MAX_EVENTS];

    while (pending > 0) {
        int k = wait_events(ep, evs, deadline);
        if (k == 0) break;
        for (int j = 0; j < k; j++) {
            uint32_t id = evs[j].data.u32;
            if (cs[id].phase == HP_IDLE) continue;
            enum hello_result r = hello_event(ep, &cs[id], id, &fails);
            if (r == HR_PENDING) continue;
            pending--;
            t_last = now_ns();
            if (r == HR_OK) answered++;
        }
    }
    if (pending > 0) {
        fails.timeout += (uint64_t)pending;
        fails.total += (uint64_t)pending;
        t_last = now_ns();
    }
    printf("{\"mode\":\"storm\",\"n\":%d,\"answered\":%llu,\"elapsed_s\":%.3f,"
           "\"connect_issue_s\":%.3f,",
           n, (unsigned long long)answered, ns_to_s(t_last - t_start),
           ns_to_s(t_connected - t_start));
    print_failures(&fails);
    printf("}\n");
    return 0;
}

/* ------------------------------------------------------------------ */
/* idle: N connections held open, each having done one 1-byte echo     */
/* ------------------------------------------------------------------ */

#define IDLE_WAVE 500

/* Wait until every fd of ids [lo, hi) saw an event of its phase; returns how
 * many failed (error, or the server closed).  `want_byte`: wait for the echo
 * of one byte instead of for the connection to be established. */
static int idle_wave_wait(int ep, int *fds, int lo, int hi, int want_byte) {
    int pending = hi - lo, failed = 0;
    struct epoll_event evs[MAX_EVENTS];
    uint64_t deadline = now_ns() + 30ull * 1000000000u;
    while (pending > 0) {
        int k = wait_events(ep, evs, deadline);
        if (k == 0) die_msg("idle: timed out");
        for (int j = 0; j < k; j++) {
            int i = (int)evs[j].data.u32;
            if (i < lo || i >= hi || fds[i] < 0) continue;
            char b;
            int ok = want_byte ? recv(fds[i], &b, 1, 0) == 1 && b == 'x'
                               : socket_error(fds[i]) == 0;
            ep_ctl(ep, EPOLL_CTL_MOD, fds[i], 0, (uint32_t)i); /* park */
            if (!ok) {
                close(fds[i]);
                fds[i] = -1;
                failed++;
            }
            pending--;
        }
    }
    return failed;
}

static int mode_idle(int n, double hold_s) {
    raise_nofile((rlim_t)n + 64);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) die("epoll_create1");
    int *fds = calloc((size_t)n, sizeof(int));
    if (!fds) die_msg("out of memory");
    int failed = 0;
    uint64_t t_start = now_ns();
    for (int lo = 0; lo < n; lo += IDLE_WAVE) {
        int hi = lo + IDLE_WAVE < n ? lo + IDLE_WAVE : n;
        for (int i = lo; i < hi; i++) {
            int err;
            fds[i] = start_connect(&err);
            if (fds[i] < 0) {
                errno = err;
                die("connect");
            }
            ep_ctl(ep, EPOLL_CTL_ADD, fds[i], EPOLLOUT, (uint32_t)i);
        }
        failed += idle_wave_wait(ep, fds, lo, hi, 0);
        for (int i = lo; i < hi; i++) {
            if (fds[i] < 0) continue;
            if (send(fds[i], "x", 1, MSG_NOSIGNAL) != 1) die("send");
            ep_ctl(ep, EPOLL_CTL_MOD, fds[i], EPOLLIN, (uint32_t)i);
        }
        failed += idle_wave_wait(ep, fds, lo, hi, 1);
    }
    uint64_t t_held = now_ns();
    /* hold: every connection idle; any event now means the server gave up on it */
    struct epoll_event evs[MAX_EVENTS];
    uint64_t deadline = t_held + (uint64_t)(hold_s * 1e9);
    int lost = 0;
    for (;;) {
        int k = wait_events(ep, evs, deadline);
        if (k == 0) break;
        for (int j = 0; j < k; j++) {
            int i = (int)evs[j].data.u32;
            if (fds[i] < 0) continue;
            ep_ctl(ep, EPOLL_CTL_DEL, fds[i], 0, 0);
            close(fds[i]);
            fds[i] = -1;
            lost++;
        }
    }
    printf("{\"mode\":\"idle\",\"n\":%d,\"held\":%d,\"failed\":%d,\"lost\":%d,"
           "\"setup_s\":%.3f,\"hold_s\":%.3f}\n",
           n, n - failed - lost, failed, lost, ns_to_s(t_held - t_start), hold_s);
    return 0;
}

/* ------------------------------------------------------------------ */

static void usage(void) {
    fprintf(stderr,
            "usage: loadgen echo  HOST PORT CONNS MSGSIZE SECONDS\n"
            "       loadgen churn HOST PORT CONCURRENCY SECONDS\n"
            "       loadgen bulk  HOST PORT CONNS SECONDS\n"
            "       loadgen storm HOST PORT N [TIMEOUT_SECONDS]\n"
            "       loadgen idle  HOST PORT N HOLD_SECONDS\n");
    exit(2);
}

int main(int argc, char **argv) {
    if (argc < 5) usage();
    const char *mode = argv[1];
    resolve_target(argv[2], argv[3]);
    int rc;
    if (strcmp(mode, "echo") == 0 && argc == 7) {
        rc = mode_echo((int)parse_long(argv[4], "CONNS", 1),
                       (size_t)parse_long(argv[5], "MSGSIZE", 1), parse_seconds(argv[6]));
    } else if (strcmp(mode, "churn") == 0 && argc == 6) {
        rc = mode_churn((int)parse_long(argv[4], "CONCURRENCY", 1), parse_seconds(argv[5]));
    } else if (strcmp(mode, "bulk") == 0 && argc == 6) {
        rc = mode_bulk((int)parse_long(argv[4], "CONNS", 1), parse_seconds(argv[5]));
    } else if (strcmp(mode, "storm") == 0 && (argc == 5 || argc == 6)) {
        rc = mode_storm((int)parse_long(argv[4], "N", 1),
                        argc == 6 ? parse_seconds(argv[5]) : 60.0);
    } else if (strcmp(mode, "idle") == 0 && argc == 6) {
        rc = mode_idle((int)parse_long(argv[4], "N", 1), parse_seconds(argv[5]));
    } else {
        usage();
        return 2;
    }
    fflush(stdout);
    return rc;
}
