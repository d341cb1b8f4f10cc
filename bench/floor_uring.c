/*
 * floor_uring.c - one-thread io_uring server: the second "C floor" for the
 * anyio-iocp benchmarks, with the same protocol as bench/floor.c:
 *
 *   floor_uring echo  [BACKLOG]   echo back every received chunk
 *   floor_uring hello [BACKLOG]   read "hello\n", reply "hello back\n", then
 *                                 read until the client closes, then close
 *   floor_uring sink  [BACKLOG]   read and discard until EOF, then close
 *
 * What it does is what the package's io_uring engine does at its best, with
 * no Python above it: a ring set up with IORING_SETUP_COOP_TASKRUN (the
 * engine's flags), one multishot accept on the listener, one multishot
 * receive per connection into a ring of provided buffers, and each echo
 * sent through the ring from the buffer it arrived in (the buffer goes back
 * to the ring when its send completes).  One io_uring_enter() per loop both
 * submits what the last batch queued and waits for the next completion.
 * A connection has at most one send in flight; the others wait in a FIFO,
 * so bytes leave in the order they came.  At the peer's end of stream what
 * is queued is still sent, then the connection closes.  A receive that
 * finds the pool dry (ENOBUFS: its buffers wait in sends to slow readers)
 * is armed again once buffers come back.
 *
 * Listens on 127.0.0.1 with an ephemeral port and prints the port on one
 * line of stdout.  Runs until killed.  Needs Linux 6.0 or later (multishot
 * receives; buffer rings and COOP_TASKRUN are 5.19's) and its headers: on
 * an older kernel it says which call was refused and exits 2.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/io_uring.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "floor_common.h"

#define SQ_ENTRIES 4096
#define CQ_ENTRIES 16384
#ifndef NBUFS
#define NBUFS 1024 /* provided buffers (a power of two) */
#endif
#define BUF_SIZE 16384
#define BGID 0

enum op { OP_ACCEPT = 1, OP_RECV, OP_SEND, OP_REPLY };

/* user_data: the operation in the top byte, the buffer id in the next 16
 * bits, the descriptor in the low 32 */
#define UD(op, bid, fd) (((uint64_t)(op) << 56) | ((uint64_t)(bid) << 32) | (uint32_t)(fd))
#define UD_OP(u) ((int)((u) >> 56))
#define UD_BID(u) ((int)(((u) >> 32) & 0xffff))
#define UD_FD(u) ((int)((u) & 0xffffffffu))
#define NO_BID 0xffff

struct conn {
    uint8_t open;         /* accepted and not closed yet */
    uint8_t recv_armed;
    uint8_t replying;     /* hello: the reply's send is in flight */
    uint8_t eof;          /* dropped: closed once its requests have ended */
    uint8_t peer_done;    /* the peer's end of stream: close once all is sent */
    uint8_t replied;      /* hello: reply sent */
    uint8_t hello_len;
    char hello[HELLO_BUF];
    int sending;          /* buffer id of the send in flight, or -1 */
    int queue_head, queue_tail; /* buffers waiting to be sent, or -1 */
};

struct pending_send {     /* per provided buffer, while its echo is sent */
    int next;             /* next buffer in the connection's queue */
    uint32_t off, len;
};

static enum mode mode;
static struct conn *conns;
static size_t nconns;
static int ring_fd, lfd;

static uint32_t *sq_head, *sq_tail, *sq_mask, *sq_array;
static uint32_t *cq_head, *cq_tail, *cq_mask;
static struct io_uring_sqe *sqes;
static struct io_uring_cqe *cqes;
static uint32_t sq_local_tail, to_submit;

static struct io_uring_buf_ring *bufring;
static uint8_t *bufs;
static uint16_t buf_tail;
static uint32_t recycled;  /* buffers given back since the starved were last armed */
/* connections whose receive ended with ENOBUFS (the pool ran dry): armed
 * again once buffers come back, not at once (it would end the same way) */
static int *starved;
static size_t nstarved;
static struct pending_send sends[NBUFS];
static const char REPLY[] = "hello back\n";

static int enter(uint32_t submit, uint32_t wait_for) {
    return (int)syscall(__NR_io_uring_enter, ring_fd, submit, wait_for,
                        wait_for ? IORING_ENTER_GETEVENTS : 0, NULL, 0);
}

static void setup_ring(void) {
    struct io_uring_params p;
    memset(&p, 0, sizeof(p));
    p.flags = IORING_SETUP_COOP_TASKRUN | IORING_SETUP_CQSIZE;
    p.cq_entries = CQ_ENTRIES;
    ring_fd = (int)syscall(__NR_io_uring_setup, SQ_ENTRIES, &p);
    if (ring_fd < 0) die("io_uring_setup");
    if (!(p.features & IORING_FEAT_SINGLE_MMAP)) {
        errno = ENOSYS;
        die("io_uring without IORING_FEAT_SINGLE_MMAP");
    }
    size_t sq_size = p.sq_off.array + p.sq_entries * sizeof(uint32_t);
    size_t cq_size = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
    size_t size = sq_size > cq_size ? sq_size : cq_size;
    uint8_t *rings = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE,
                          ring_fd, IORING_OFF_SQ_RING);
    if (rings == MAP_FAILED) die("mmap rings");
    sq_head = (uint32_t *)(rings + p.sq_off.head);
    sq_tail = (uint32_t *)(rings + p.sq_off.tail);
    sq_mask = (uint32_t *)(rings + p.sq_off.ring_mask);
    sq_array = (uint32_t *)(rings + p.sq_off.array);
    cq_head = (uint32_t *)(rings + p.cq_off.head);
    cq_tail = (uint32_t *)(rings + p.cq_off.tail);
    cq_mask = (uint32_t *)(rings + p.cq_off.ring_mask);
    cqes = (struct io_uring_cqe *)(rings + p.cq_off.cqes);
    sqes = mmap(NULL, p.sq_entries * sizeof(struct io_uring_sqe), PROT_READ | PROT_WRITE,
                MAP_SHARED | MAP_POPULATE, ring_fd, IORING_OFF_SQES);
    if (sqes == MAP_FAILED) die("mmap sqes");
    sq_local_tail = *sq_tail;
}

/* Give a buffer back to the kernel (published with the batch's last one). */
static void recycle(int bid) {
    struct io_uring_buf *b = &bufring->bufs[buf_tail & (NBUFS - 1)];
    b->addr = (uint64_t)(uintptr_t)(bufs + (size_t)bid * BUF_SIZE);
    b->len = BUF_SIZE;
    b->bid = (uint16_t)bid;
    buf_tail++;
    recycled++;
}

static void publish_buffers(void) {
    atomic_store_explicit((_Atomic uint16_t *)&bufring->tail, buf_tail, memory_order_release);
}

static void setup_buffers(void) {
    size_t ring_size = NBUFS * sizeof(struct io_uring_buf);
    bufring = mmap(NULL, ring_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (bufring == MAP_FAILED) die("mmap buffer ring");
    bufs = malloc((size_t)NBUFS * BUF_SIZE);
    if (!bufs) die("malloc buffers");
    struct io_uring_buf_reg reg;
    memset(&reg, 0, sizeof(reg));
    reg.ring_addr = (uint64_t)(uintptr_t)bufring;
    reg.ring_entries = NBUFS;
    reg.bgid = BGID;
    if (syscall(__NR_io_uring_register, ring_fd, IORING_REGISTER_PBUF_RING, &reg, 1) != 0)
        die("IORING_REGISTER_PBUF_RING");
    for (int bid = 0; bid < NBUFS; bid++) recycle(bid);
    publish_buffers();
    recycled = 0; /* (nothing starved yet) */
}

static struct io_uring_sqe *get_sqe(void) {
    uint32_t head = atomic_load_explicit((_Atomic uint32_t *)sq_head, memory_order_acquire);
    while (sq_local_tail - head >= SQ_ENTRIES) {
        /* full: hand what is queued to the kernel first */
        atomic_store_explicit((_Atomic uint32_t *)sq_tail, sq_local_tail, memory_order_release);
        int rc = enter(to_submit, 0);
        if (rc < 0) {
            if (errno != EINTR) die("io_uring_enter (the submission ring is full)");
            continue;
        }
        to_submit -= (uint32_t)rc < to_submit ? (uint32_t)rc : to_submit;
        head = atomic_load_explicit((_Atomic uint32_t *)sq_head, memory_order_acquire);
    }
    uint32_t index = sq_local_tail & *sq_mask;
    struct io_uring_sqe *sqe = &sqes[index];
    memset(sqe, 0, sizeof(*sqe));
    sq_array[index] = index;
    sq_local_tail++;
    to_submit++;
    return sqe;
}

static void post_accept(void) {
    struct io_uring_sqe *sqe = get_sqe();
    sqe->opcode = IORING_OP_ACCEPT;
    sqe->fd = lfd;
    sqe->ioprio = IORING_ACCEPT_MULTISHOT;
    sqe->accept_flags = SOCK_CLOEXEC;
    sqe->user_data = UD(OP_ACCEPT, NO_BID, lfd);
}

static void post_recv(int fd) {
    struct io_uring_sqe *sqe = get_sqe();
    sqe->opcode = IORING_OP_RECV;
    sqe->fd = fd;
    sqe->ioprio = IORING_RECV_MULTISHOT;
    sqe->flags = IOSQE_BUFFER_SELECT;
    sqe->buf_group = BGID;
    sqe->user_data = UD(OP_RECV, NO_BID, fd);
    conns[fd].recv_armed = 1;
}

static void post_send(int fd, int bid) {
    struct pending_send *s = &sends[bid];
    struct io_uring_sqe *sqe = get_sqe();
    sqe->opcode = IORING_OP_SEND;
    sqe->fd = fd;
    sqe->addr = (uint64_t)(uintptr_t)(bufs + (size_t)bid * BUF_SIZE + s->off);
    sqe->len = s->len - s->off;
    sqe->msg_flags = MSG_NOSIGNAL;
    sqe->user_data = UD(OP_SEND, bid, fd);
    conns[fd].sending = bid;
}

static void post_reply(int fd) {
    struct io_uring_sqe *sqe = get_sqe();
    sqe->opcode = IORING_OP_SEND;
    sqe->fd = fd;
    sqe->addr = (uint64_t)(uintptr_t)REPLY;
    sqe->len = sizeof(REPLY) - 1;
    sqe->msg_flags = MSG_NOSIGNAL;
    sqe->user_data = UD(OP_REPLY, NO_BID, fd);
    conns[fd].replying = 1;
}

/* A connection slot that holds nothing (no buffer is 0: -1 is none). */
static void reset_conn(struct conn *c) {
    memset(c, 0, sizeof(*c));
    c->sending = c->queue_head = c->queue_tail = -1;
}

/* Close once nothing of the kernel's still refers to the socket: a request
 * in flight holds the file open, and its completion must not be taken for
 * one of a new connection that reuses the descriptor. */
static void close_when_idle(int fd) {
    struct conn *c = &conns[fd];
    if (c->recv_armed || c->sending >= 0 || c->replying) return;
    reset_conn(c);
    close(fd);
}

static void drop(int fd) {
    struct conn *c = &conns[fd];
    /* every buffer still queued goes back; the one in flight comes back
     * with its completion */
    for (int bid = c->queue_head; bid >= 0; bid = sends[bid].next) recycle(bid);
    c->queue_head = c->queue_tail = -1;
    c->eof = 1;
    if (c->recv_armed || c->sending >= 0 || c->replying) shutdown(fd, SHUT_RDWR); /* ends them */
    close_when_idle(fd);
}

static void on_accept(int res, uint32_t flags) {
    if (!(flags & IORING_CQE_F_MORE)) post_accept(); /* the kernel ended it: again */
    if (res < 0) return; /* ECONNABORTED, EMFILE...: the next one may do */
    int fd = res;
    if ((size_t)fd >= nconns) {
        close(fd);
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    struct conn *c = &conns[fd];
    reset_conn(c);
    c->open = 1;
    post_recv(fd);
}

static void queue_echo(int fd, int bid, int len) {
    struct conn *c = &conns[fd];
    sends[bid] = (struct pending_send){.next = -1, .off = 0, .len = (uint32_t)len};
    if (c->sending < 0) {
        post_send(fd, bid);
        return;
    }
    if (c->queue_tail >= 0)
        sends[c->queue_tail].next = bid;
    else
        c->queue_head = bid;
    c->queue_tail = bid;
}

static void on_hello(int fd, const uint8_t *data, int n) {
    struct conn *c = &conns[fd];
    if (c->replied) return; /* discard until EOF */
    if (n > HELLO_BUF - c->hello_len) {
        drop(fd);
        return;
    }
    memcpy(c->hello + c->hello_len, data, (size_t)n);
    c->hello_len = (uint8_t)(c->hello_len + n);
    if (!memmem(c->hello, c->hello_len, "hello\n", 6)) return;
    c->replied = 1;
    post_reply(fd);
}

static void on_recv(int fd, int res, uint32_t flags) {
    struct conn *c = &conns[fd];
    int more = (flags & IORING_CQE_F_MORE) != 0;
    if (!more) c->recv_armed = 0;
    if (c->eof || !c->open) { /* dropped: only waiting for its requests to end */
        if (flags & IORING_CQE_F_BUFFER) recycle((int)(flags >> IORING_CQE_BUFFER_SHIFT));
        if (c->open) close_when_idle(fd);
        return;
    }
    if (res == -ENOBUFS) {
        starved[nstarved++] = fd;
        return;
    }
    if (res == -EINVAL) { /* before Linux 6.0: a receive cannot be multishot */
        errno = EINVAL;
        die("multishot receive (IORING_RECV_MULTISHOT needs Linux 6.0)");
    }
    if (res == 0) { /* the peer's end of stream: what is queued still goes */
        c->peer_done = 1;
        if (c->sending < 0 && !c->replying) drop(fd);
        return;
    }
    if (res < 0) { /* an error (e.g. reset): close quietly */
        drop(fd);
        return;
    }
    int bid = (int)(flags >> IORING_CQE_BUFFER_SHIFT);
    if (mode == M_ECHO) {
        queue_echo(fd, bid, res);
    } else {
        if (mode == M_HELLO) on_hello(fd, bufs + (size_t)bid * BUF_SIZE, res);
        recycle(bid);
    }
    if (!more && c->open && !c->eof && !c->peer_done) post_recv(fd);
}

static void on_send(int fd, int bid, int res) {
    struct conn *c = &conns[fd];
    struct pending_send *s = &sends[bid];
    c->sending = -1;
    if (res > 0 && !c->eof && s->off + (uint32_t)res < s->len) {
        s->off += (uint32_t)res; /* a short send: the rest, before anything else */
        post_send(fd, bid);
        return;
    }
    recycle(bid);
    if (c->eof) { /* dropped while this send was in flight */
        close_when_idle(fd);
        return;
    }
    if (res < 0) {
        drop(fd);
        return;
    }
    if (c->queue_head >= 0) {
        int next = c->queue_head;
        c->queue_head = sends[next].next;
        if (c->queue_head < 0) c->queue_tail = -1;
        post_send(fd, next);
    } else if (c->peer_done) {
        drop(fd); /* everything echoed */
    }
}

static void on_reply(int fd) {
    struct conn *c = &conns[fd];
    c->replying = 0;
    if (c->eof)
        close_when_idle(fd);
    else if (c->peer_done)
        drop(fd); /* the peer had closed its side: done */
}

int main(int argc, char **argv) {
    int backlog;
    floor_name = "floor_uring";
    mode = parse_command_line(argc, argv, &backlog);

    nconns = (size_t)raise_nofile();
    conns = calloc(nconns, sizeof(*conns));
    starved = calloc(nconns, sizeof(*starved));
    if (!conns || !starved) die("calloc");
    setup_ring();
    setup_buffers();

    lfd = listen_on_loopback(backlog, 0);
    post_accept();

    for (;;) {
        atomic_store_explicit((_Atomic uint32_t *)sq_tail, sq_local_tail, memory_order_release);
        int rc = enter(to_submit, 1);
        if (rc < 0) {
            /* refused for now (EAGAIN, EBUSY: completions must be read
             * first): read them, and submit again next time round */
            if (errno != EINTR && errno != EAGAIN && errno != EBUSY) die("io_uring_enter");
            rc = 0;
        }
        to_submit -= (uint32_t)rc < to_submit ? (uint32_t)rc : to_submit;
        uint32_t head = *cq_head;
        uint32_t tail = atomic_load_explicit((_Atomic uint32_t *)cq_tail, memory_order_acquire);
        for (; head != tail; head++) {
            struct io_uring_cqe *cqe = &cqes[head & *cq_mask];
            uint64_t ud = cqe->user_data;
            int fd = UD_FD(ud);
            switch (UD_OP(ud)) {
            case OP_ACCEPT:
                on_accept(cqe->res, cqe->flags);
                break;
            case OP_RECV:
                on_recv(fd, cqe->res, cqe->flags);
                break;
            case OP_SEND:
                on_send(fd, UD_BID(ud), cqe->res);
                break;
            case OP_REPLY:
                on_reply(fd); /* (a short or failed reply: the client's EOF closes it) */
                break;
            }
        }
        atomic_store_explicit((_Atomic uint32_t *)cq_head, head, memory_order_release);
        publish_buffers();
        if (recycled && nstarved) { /* buffers came back since: arm the starved again */
            while (nstarved) {
                int fd = starved[--nstarved];
                struct conn *c = &conns[fd];
                if (c->open && !c->eof && !c->peer_done && !c->recv_armed) post_recv(fd);
            }
            recycled = 0;
        }
    }
}
