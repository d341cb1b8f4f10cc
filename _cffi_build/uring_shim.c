/*
 * uring_shim.c: a small io_uring driver written against the kernel's own
 * <linux/io_uring.h>, with raw io_uring_setup/io_uring_enter/io_uring_register
 * system calls (no liburing).
 *
 * The Python side owns every buffer handed to the kernel and keeps it alive
 * until the completion of the operation that uses it has been reaped.  This
 * file only prepares submission queue entries, hands them to the kernel in
 * batches and copies completions out in batches.
 *
 * Quiet sends are the one exception to "every completion goes to Python": a
 * send prepared with iou_prep_send_quiet carries its stream's slot and its
 * length in user_data, and the reaper counts its completion in that slot
 * (iou_quiet.done).  A completion that sent every byte is not copied out
 * unless the slot is watched; any other result (an error, a short send, a
 * cancel) always is.  Python compares a slot's count with the sends it posted
 * to know when a send's memory is free again.
 *
 * The calls keep Python's GIL (build_uring.py says why): they return at
 * once, except iou_submit, which lets go of the GIL while it is in the
 * kernel (the kernel may do the submitted I/O there, as a loopback send, or
 * wait for completions), between IOU_KERNEL_BEGIN and IOU_KERNEL_END
 * (defined by the build; empty where the shim is compiled without Python).
 * So iou_submit must be called with the GIL held, as through cffi's lib
 * object (not through a function pointer, for which cffi lets go of it).
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <linux/io_uring.h>

#ifndef IOU_KERNEL_BEGIN
#define IOU_KERNEL_BEGIN {
#define IOU_KERNEL_END }
#endif

/* Numbers that older kernel headers may lack; the running kernel is probed. */
#ifndef IORING_ACCEPT_MULTISHOT
#define IORING_ACCEPT_MULTISHOT (1U << 0)
#endif
#ifndef IORING_SQ_CQ_OVERFLOW
#define IORING_SQ_CQ_OVERFLOW (1U << 1)
#endif
#ifndef IORING_ASYNC_CANCEL_ALL
#define IORING_ASYNC_CANCEL_ALL (1U << 0)
#endif

/* Completion counts of quiet sends, by slot (see the top of this file). */
typedef struct iou_quiet {
    uint32_t *done;     /* per slot: quiet sends completed (wraps at 2**32) */
    uint8_t *watch;     /* per slot: non-zero copies every completion out */
    unsigned slots;
    uint64_t completed; /* quiet sends completed, every slot */
    uint64_t skipped;   /* of those, completions not copied out */
} iou_quiet;

/* user_data of a quiet send: the tag, the slot (31 bits), the length (32 bits) */
#define IOU_QUIET_TAG (1ULL << 63)

typedef struct iou_ring {
    int fd;
    unsigned features;
    unsigned sq_entries;
    unsigned cq_entries;
    /* submission ring, shared with the kernel */
    unsigned *sq_khead;
    unsigned *sq_ktail;
    unsigned *sq_kflags;
    unsigned *sq_array;
    unsigned sq_mask;
    struct io_uring_sqe *sqes;
    /* entries prepared here but not yet published to the kernel */
    unsigned sqe_tail;
    /* completion ring, shared with the kernel */
    unsigned *cq_khead;
    unsigned *cq_ktail;
    unsigned *cq_koverflow;
    unsigned cq_mask;
    struct io_uring_cqe *cqes;
    /* mappings */
    void *sq_ptr;
    size_t sq_size;
    void *cq_ptr;
    size_t cq_size;
    void *sqes_ptr;
    size_t sqes_size;
    /* where the reaper counts quiet sends; NULL: none may be posted */
    iou_quiet *quiet;
} iou_ring;

typedef struct iou_cqe {
    uint64_t user_data;
    int32_t res;
    uint32_t flags;
} iou_cqe;

static int sys_setup(unsigned entries, struct io_uring_params *p)
{
    return (int)syscall(__NR_io_uring_setup, entries, p);
}

static int sys_enter(int fd, unsigned to_submit, unsigned min_complete, unsigned flags)
{
    return (int)syscall(__NR_io_uring_enter, fd, to_submit, min_complete, flags, NULL, 0);
}

static int sys_register(int fd, unsigned opcode, void *arg, unsigned nr_args)
{
    return (int)syscall(__NR_io_uring_register, fd, opcode, arg, nr_args);
}

static void unmap_all(iou_ring *r)
{
    if (r->sqes_ptr && r->sqes_ptr != MAP_FAILED)
        munmap(r->sqes_ptr, r->sqes_size);
    if (r->cq_ptr && r->cq_ptr != MAP_FAILED && r->cq_ptr != r->sq_ptr)
        munmap(r->cq_ptr, r->cq_size);
    if (r->sq_ptr && r->sq_ptr != MAP_FAILED)
        munmap(r->sq_ptr, r->sq_size);
}

/* Returns a new ring in *out, or a negative errno. */
int iou_open(iou_ring **out, unsigned entries, unsigned cq_entries, unsigned flags)
{
    struct io_uring_params p;
    iou_ring *r;
    int fd, err;

    *out = NULL;
    memset(&p, 0, sizeof p);
    p.flags = flags;
    if (cq_entries) {
        p.flags |= IORING_SETUP_CQSIZE;
        p.cq_entries = cq_entries;
    }
    fd = sys_setup(entries, &p);
    if (fd < 0)
        return -errno;

    r = calloc(1, sizeof *r);
    if (!r) {
        close(fd);
        return -ENOMEM;
    }
    r->fd = fd;
    r->features = p.features;
    r->sq_entries = p.sq_entries;
    r->cq_entries = p.cq_entries;

    r->sq_size = p.sq_off.array + p.sq_entries * sizeof(unsigned);
    r->cq_size = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
    if (p.features & IORING_FEAT_SINGLE_MMAP) {
        if (r->cq_size > r->sq_size)
            r->sq_size = r->cq_size;
        r->cq_size = r->sq_size;
    }
    r->sq_ptr = mmap(NULL, r->sq_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE,
                     fd, IORING_OFF_SQ_RING);
    if (r->sq_ptr == MAP_FAILED)
        goto fail;
    if (p.features & IORING_FEAT_SINGLE_MMAP) {
        r->cq_ptr = r->sq_ptr;
    } else {
        r->cq_ptr = mmap(NULL, r->cq_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE,
                         fd, IORING_OFF_CQ_RING);
        if (r->cq_ptr == MAP_FAILED)
            goto fail;
    }
    r->sqes_size = p.sq_entries * sizeof(struct io_uring_sqe);
    r->sqes_ptr = mmap(NULL, r->sqes_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE,
                       fd, IORING_OFF_SQES);
    if (r->sqes_ptr == MAP_FAILED)
        goto fail;

    r->sq_khead = (unsigned *)((char *)r->sq_ptr + p.sq_off.head);
    r->sq_ktail = (unsigned *)((char *)r->sq_ptr + p.sq_off.tail);
    r->sq_kflags = (unsigned *)((char *)r->sq_ptr + p.sq_off.flags);
    r->sq_array = (unsigned *)((char *)r->sq_ptr + p.sq_off.array);
    r->sq_mask = *(unsigned *)((char *)r->sq_ptr + p.sq_off.ring_mask);
    r->sqes = r->sqes_ptr;
    r->sqe_tail = *r->sq_ktail;

    r->cq_khead = (unsigned *)((char *)r->cq_ptr + p.cq_off.head);
    r->cq_ktail = (unsigned *)((char *)r->cq_ptr + p.cq_off.tail);
    r->cq_koverflow = (unsigned *)((char *)r->cq_ptr + p.cq_off.overflow);
    r->cq_mask = *(unsigned *)((char *)r->cq_ptr + p.cq_off.ring_mask);
    r->cqes = (struct io_uring_cqe *)((char *)r->cq_ptr + p.cq_off.cqes);
    *out = r;
    return 0;

fail:
    err = -errno;
    unmap_all(r);
    close(fd);
    free(r);
    return err;
}

void iou_close(iou_ring *r)
{
    if (!r)
        return;
    unmap_all(r);
    close(r->fd);
    free(r);
}

int iou_fd(iou_ring *r) { return r->fd; }
unsigned iou_features(iou_ring *r) { return r->features; }
unsigned iou_sq_entries(iou_ring *r) { return r->sq_entries; }
unsigned iou_cq_entries(iou_ring *r) { return r->cq_entries; }
unsigned iou_cq_overflow(iou_ring *r) { return __atomic_load_n(r->cq_koverflow, __ATOMIC_ACQUIRE); }
/* The kernel's submission ring flags: IORING_SQ_CQ_OVERFLOW while completions
 * wait on the overflow list. */
unsigned iou_sq_flags(iou_ring *r) { return __atomic_load_n(r->sq_kflags, __ATOMIC_ACQUIRE); }

/* Completions waiting in the completion ring (shared memory: no system call),
 * or at least 1 when the kernel holds more on its overflow list: a reap
 * flushes that list, so a caller that reaps only when this is non-zero never
 * leaves completions behind. */
unsigned iou_cq_ready(iou_ring *r)
{
    unsigned ready = __atomic_load_n(r->cq_ktail, __ATOMIC_ACQUIRE) - *r->cq_khead;

    if (!ready && (__atomic_load_n(r->sq_kflags, __ATOMIC_ACQUIRE) & IORING_SQ_CQ_OVERFLOW))
        return 1;
    return ready;
}

/* Free submission slots (prepared entries count as used). */
unsigned iou_sq_space(iou_ring *r)
{
    return r->sq_entries - (r->sqe_tail - __atomic_load_n(r->sq_khead, __ATOMIC_ACQUIRE));
}

/* Entries the kernel has not consumed yet: prepared here and not published,
 * or published but refused by the last io_uring_enter (EAGAIN, EBUSY, or a
 * partial submission); they go in again on the next submit. */
unsigned iou_unsubmitted(iou_ring *r)
{
    return r->sqe_tail - __atomic_load_n(r->sq_khead, __ATOMIC_ACQUIRE);
}

static struct io_uring_sqe *next_sqe(iou_ring *r)
{
    unsigned head = __atomic_load_n(r->sq_khead, __ATOMIC_ACQUIRE);
    struct io_uring_sqe *sqe;

    if (r->sqe_tail - head >= r->sq_entries)
        return NULL;
    sqe = &r->sqes[r->sqe_tail & r->sq_mask];
    memset(sqe, 0, sizeof *sqe);
    r->sq_array[r->sqe_tail & r->sq_mask] = r->sqe_tail & r->sq_mask;
    r->sqe_tail++;
    return sqe;
}

static int prep(iou_ring *r, unsigned char op, int fd, const void *addr, unsigned len,
                uint64_t off, uint64_t user_data, struct io_uring_sqe **out)
{
    struct io_uring_sqe *sqe = next_sqe(r);

    if (!sqe)
        return -EBUSY;
    sqe->opcode = op;
    sqe->fd = fd;
    sqe->addr = (uint64_t)(uintptr_t)addr;
    sqe->len = len;
    sqe->off = off;
    sqe->user_data = user_data;
    *out = sqe;
    return 0;
}

int iou_prep_recv(iou_ring *r, int fd, void *buf, unsigned len, int msg_flags, uint64_t user_data)
{
    struct io_uring_sqe *sqe;
    int rc = prep(r, IORING_OP_RECV, fd, buf, len, 0, user_data, &sqe);

    if (rc == 0)
        sqe->msg_flags = (unsigned)msg_flags;
    return rc;
}

int iou_prep_send(iou_ring *r, int fd, const void *buf, unsigned len, int msg_flags,
                  uint64_t user_data)
{
    struct io_uring_sqe *sqe;
    int rc = prep(r, IORING_OP_SEND, fd, buf, len, 0, user_data, &sqe);

    if (rc == 0)
        sqe->msg_flags = (unsigned)msg_flags;
    return rc;
}

/*
 * A send whose successful completion the reaper keeps to itself (counted in
 * quiet->done[slot]).  The caller keeps buf alive until that count covers it.
 */
int iou_prep_send_quiet(iou_ring *r, int fd, const char *buf, unsigned len, int msg_flags,
                        unsigned slot)
{
    struct io_uring_sqe *sqe;
    uint64_t user_data;
    int rc;

    if (!r->quiet || slot == 0 || slot >= r->quiet->slots || len == 0)
        return -EINVAL;
    user_data = IOU_QUIET_TAG | ((uint64_t)slot << 32) | len;
    rc = prep(r, IORING_OP_SEND, fd, buf, len, 0, user_data, &sqe);
    if (rc == 0)
        sqe->msg_flags = (unsigned)msg_flags;
    return rc;
}

/* Where the reaper counts quiet sends from now on (NULL: nowhere). */
void iou_set_quiet(iou_ring *r, iou_quiet *q) { r->quiet = q; }

/* recvmsg/sendmsg: the message header (address, iovecs, control buffer) is
 * the caller's and must stay alive until the completion, like every buffer. */
int iou_prep_recvmsg(iou_ring *r, int fd, struct msghdr *msg, int msg_flags, uint64_t user_data)
{
    struct io_uring_sqe *sqe;
    int rc = prep(r, IORING_OP_RECVMSG, fd, msg, 1, 0, user_data, &sqe);

    if (rc == 0)
        sqe->msg_flags = (unsigned)msg_flags;
    return rc;
}

int iou_prep_sendmsg(iou_ring *r, int fd, const struct msghdr *msg, int msg_flags,
                     uint64_t user_data)
{
    struct io_uring_sqe *sqe;
    int rc = prep(r, IORING_OP_SENDMSG, fd, msg, 1, 0, user_data, &sqe);

    if (rc == 0)
        sqe->msg_flags = (unsigned)msg_flags;
    return rc;
}

/* Multishot receive with a provided buffer: the kernel picks a buffer of
 * group `bgid` only when data arrives, and keeps the operation armed
 * (IORING_CQE_F_MORE) until an error, end of stream, cancellation, an empty
 * buffer group (ENOBUFS), or, with `total_cap` > 0, until that many bytes have
 * been received (Linux 6.17, "multishot receive len cap").  The cap travels in
 * sqe->optlen, which older headers call file_index (same field). */
int iou_prep_recv_multishot(iou_ring *r, int fd, unsigned bgid, unsigned total_cap,
                            uint64_t user_data)
{
    struct io_uring_sqe *sqe;
    int rc = prep(r, IORING_OP_RECV, fd, NULL, 0, 0, user_data, &sqe);

    if (rc == 0) {
        sqe->flags |= IOSQE_BUFFER_SELECT;
        sqe->buf_group = (__u16)bgid;
        sqe->ioprio |= IORING_RECV_MULTISHOT;
        sqe->file_index = total_cap;
    }
    return rc;
}

/* One receive into a buffer the kernel picks from group bgid when bytes arrive
 * (a single completion, IORING_CQE_F_BUFFER set when it brought bytes). */
int iou_prep_recv_select(iou_ring *r, int fd, unsigned bgid, uint64_t user_data)
{
    struct io_uring_sqe *sqe;
    int rc = prep(r, IORING_OP_RECV, fd, NULL, 0, 0, user_data, &sqe);

    if (rc == 0) {
        sqe->flags |= IOSQE_BUFFER_SELECT;
        sqe->buf_group = (__u16)bgid;
    }
    return rc;
}

int iou_prep_accept(iou_ring *r, int fd, int multishot, uint64_t user_data)
{
    struct io_uring_sqe *sqe;
    int rc = prep(r, IORING_OP_ACCEPT, fd, NULL, 0, 0, user_data, &sqe);

    if (rc == 0) {
        sqe->accept_flags = SOCK_CLOEXEC | SOCK_NONBLOCK;
        if (multishot)
            sqe->ioprio |= IORING_ACCEPT_MULTISHOT;
    }
    return rc;
}

/* A one-shot poll for `events` (POLLOUT: the end of a connect's handshake).
 * The 32-bit event mask is stored in host order with its 16-bit halves
 * swapped on big-endian machines, where the kernel reads it that way. */
int iou_prep_poll(iou_ring *r, int fd, unsigned events, uint64_t user_data)
{
    struct io_uring_sqe *sqe;
    int rc = prep(r, IORING_OP_POLL_ADD, fd, NULL, 0, 0, user_data, &sqe);

    if (rc == 0) {
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
        events = (events << 16) | (events >> 16);
#endif
        sqe->poll32_events = events;
    }
    return rc;
}

/* accept4() of a connection waiting on the non-blocking listener `fd`: the
 * new descriptor, non-blocking and close-on-exec, or -errno (-EAGAIN: none
 * waiting).  No address is read back and no exception made for EAGAIN, which
 * Python's socket.accept() does each time. */
int iou_accept_now(int fd)
{
    int conn = accept4(fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);

    return conn >= 0 ? conn : -errno;
}

int iou_prep_cancel(iou_ring *r, uint64_t target, uint64_t user_data)
{
    struct io_uring_sqe *sqe;

    return prep(r, IORING_OP_ASYNC_CANCEL, -1, (const void *)(uintptr_t)target, 0, 0,
                user_data, &sqe);
}

int iou_prep_close(iou_ring *r, int fd, uint64_t user_data)
{
    struct io_uring_sqe *sqe;

    return prep(r, IORING_OP_CLOSE, fd, NULL, 0, 0, user_data, &sqe);
}

int iou_prep_nop(iou_ring *r, uint64_t user_data)
{
    struct io_uring_sqe *sqe;

    return prep(r, IORING_OP_NOP, -1, NULL, 0, 0, user_data, &sqe);
}

/*
 * A chain of n receives or sends (op: IORING_OP_RECV or IORING_OP_SEND) on
 * one socket, each entry linked to the next (IOSQE_IO_LINK) but the last:
 * prepared whole, or not at all.  bufs, lens and user_data hold n items
 * each.  Returns 0, -EBUSY (fewer than n free slots) or -EINVAL, with no
 * entry prepared then.  One call for the whole chain, so that nothing can
 * fail between two of its entries: a loop in Python allocates on the way
 * (an argument tuple per call), and an entry left linked to whatever comes
 * next would join another socket's operation to the chain.
 */
int iou_prep_chain(iou_ring *r, int op, int fd, void *const *bufs, const unsigned *lens,
                   const uint64_t *user_data, int msg_flags, unsigned n)
{
    struct io_uring_sqe *sqe;
    unsigned i;

    if ((op != IORING_OP_RECV && op != IORING_OP_SEND) || n == 0)
        return -EINVAL;
    if (iou_sq_space(r) < n)
        return -EBUSY;
    for (i = 0; i < n; i++) {
        prep(r, (unsigned char)op, fd, bufs[i], lens[i], 0, user_data[i], &sqe);
        sqe->msg_flags = (unsigned)msg_flags;
        if (i + 1 < n)
            sqe->flags |= IOSQE_IO_LINK;
    }
    return 0;
}

/* Sets SQE flags (IOSQE_IO_LINK, ...) on the entry prepared last. */
int iou_set_last_flags(iou_ring *r, unsigned flags)
{
    if (r->sqe_tail == *r->sq_ktail)
        return -ENOENT;
    r->sqes[(r->sqe_tail - 1) & r->sq_mask].flags |= (unsigned char)flags;
    return 0;
}

/*
 * Publishes prepared entries and enters the kernel once.  wait_nr > 0 also
 * waits for that many completions.  Returns the number of entries the kernel
 * consumed, or a negative errno (EINTR is retried here).
 */
int iou_submit(iou_ring *r, unsigned wait_nr)
{
    unsigned to_submit, flags = 0;
    int rc;

    __atomic_store_n(r->sq_ktail, r->sqe_tail, __ATOMIC_RELEASE);
    to_submit = r->sqe_tail - __atomic_load_n(r->sq_khead, __ATOMIC_ACQUIRE);
    if (wait_nr || (__atomic_load_n(r->sq_kflags, __ATOMIC_ACQUIRE) & IORING_SQ_CQ_OVERFLOW))
        flags |= IORING_ENTER_GETEVENTS;
    if (!to_submit && !flags)
        return 0;
    IOU_KERNEL_BEGIN  /* other threads run while this one is in the kernel */
    do {
        rc = sys_enter(r->fd, to_submit, wait_nr, flags);
    } while (rc < 0 && errno == EINTR);
    if (rc < 0)
        rc = -errno;
    IOU_KERNEL_END
    return rc;
}

/*
 * Copies up to max completions into three columns (user_data, res, flags:
 * Python turns each into a list in one call, where reading a struct's
 * fields costs a lookup per field) and frees their slots.  When the kernel
 * had to park completions on its overflow list (the ring was full), they
 * are flushed into the ring and reaped too.
 */
int iou_reap_columns(iou_ring *r, uint64_t *user_data, int32_t *res, uint32_t *flags, int max)
{
    int n = 0;

    for (;;) {
        unsigned head = *r->cq_khead;
        unsigned tail = __atomic_load_n(r->cq_ktail, __ATOMIC_ACQUIRE);

        while (head != tail && n < max) {
            struct io_uring_cqe *c = &r->cqes[head & r->cq_mask];
            if ((c->user_data & IOU_QUIET_TAG) && r->quiet) {
                iou_quiet *q = r->quiet;
                unsigned slot = (unsigned)(c->user_data >> 32) & 0x7fffffffU;
                uint32_t len = (uint32_t)c->user_data;
                if (slot < q->slots) {
                    q->done[slot]++;
                    q->completed++;
                    if (c->res >= 0 && (uint32_t)c->res == len && !q->watch[slot]) {
                        q->skipped++;
                        head++;
                        continue;
                    }
                }
            }
            user_data[n] = c->user_data;
            res[n] = c->res;
            flags[n] = c->flags;
            n++;
            head++;
        }
        __atomic_store_n(r->cq_khead, head, __ATOMIC_RELEASE);
        if (n == max)
            return n;
        if (!(__atomic_load_n(r->sq_kflags, __ATOMIC_ACQUIRE) & IORING_SQ_CQ_OVERFLOW))
            return n;
        /* flush the overflow list into the (now emptier) ring, then go on */
        if (sys_enter(r->fd, 0, 0, IORING_ENTER_GETEVENTS) < 0 && errno != EINTR)
            return n;
    }
}

/* iou_reap_columns into structs, in pieces (for probes and tests: the
 * engine reaps columns). */
int iou_reap(iou_ring *r, iou_cqe *out, int max)
{
    uint64_t user_data[64];
    int32_t res[64];
    uint32_t flags[64];
    int total = 0;

    while (total < max) {
        int piece = max - total < 64 ? max - total : 64;
        int n = iou_reap_columns(r, user_data, res, flags, piece);
        for (int i = 0; i < n; i++) {
            out[total + i].user_data = user_data[i];
            out[total + i].res = res[i];
            out[total + i].flags = flags[i];
        }
        total += n;
        if (n < piece)
            break;
    }
    return total;
}

/* Fills supported[op] with 1 for each opcode this kernel supports. */
int iou_probe(iou_ring *r, unsigned char *supported, int n)
{
    size_t size = sizeof(struct io_uring_probe) + 256 * sizeof(struct io_uring_probe_op);
    struct io_uring_probe *p = calloc(1, size);
    int i, rc;

    if (!p)
        return -ENOMEM;
    rc = sys_register(r->fd, IORING_REGISTER_PROBE, p, 256);
    if (rc < 0) {
        rc = -errno;
        free(p);
        return rc;
    }
    memset(supported, 0, (size_t)n);
    for (i = 0; i < p->ops_len && i < n; i++)
        supported[i] = (p->ops[i].flags & IO_URING_OP_SUPPORTED) ? 1 : 0;
    rc = p->last_op;
    free(p);
    return rc;
}


/* ---- provided buffer rings (IORING_REGISTER_PBUF_RING, Linux 5.19) ---------
 *
 * A pool of `entries` buffers of `size` bytes for one buffer group.  The ring
 * of buffer descriptors and the buffers are this process's memory, shared with
 * the kernel: they must stay mapped until every operation that may pick a
 * buffer of the group has completed (the engine drains them first).  A buffer
 * the kernel filled is named in its completion (IORING_CQE_F_BUFFER, the id in
 * the upper 16 bits of the flags); the engine copies the bytes out at once,
 * and gives the buffers of a batch of completions back together with
 * iou_pbuf_recycle_many. */

typedef struct iou_pbuf {
    struct io_uring_buf_ring *br;
    size_t ring_bytes;
    char *base;
    size_t base_bytes;
    unsigned entries;
    unsigned size;
    unsigned bgid;
    unsigned short tail;
} iou_pbuf;

static void pbuf_add(iou_pbuf *p, unsigned bid)
{
    struct io_uring_buf *buf = &p->br->bufs[p->tail & (p->entries - 1)];

    buf->addr = (uint64_t)(uintptr_t)(p->base + (size_t)bid * p->size);
    buf->len = p->size;
    buf->bid = (__u16)bid;
    p->tail++;
}

static void pbuf_publish(iou_pbuf *p)
{
    __atomic_store_n(&p->br->tail, p->tail, __ATOMIC_RELEASE);
}

static void pbuf_unmap(iou_pbuf *p)
{
    if (p->br && (void *)p->br != MAP_FAILED)
        munmap(p->br, p->ring_bytes);
    if (p->base && (void *)p->base != MAP_FAILED)
        munmap(p->base, p->base_bytes);
    free(p);
}

/* entries: a power of two, at most 32768. */
int iou_pbuf_open(iou_ring *r, iou_pbuf **out, unsigned bgid, unsigned entries, unsigned size)
{
    struct io_uring_buf_reg reg;
    iou_pbuf *p;
    unsigned i;
    int rc;

    *out = NULL;
    if (entries == 0 || entries > 32768 || (entries & (entries - 1)) || size == 0)
        return -EINVAL;
    p = calloc(1, sizeof *p);
    if (!p)
        return -ENOMEM;
    p->entries = entries;
    p->size = size;
    p->bgid = bgid;
    p->ring_bytes = (size_t)entries * sizeof(struct io_uring_buf);
    p->base_bytes = (size_t)entries * size;
    p->br = mmap(NULL, p->ring_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    p->base = mmap(NULL, p->base_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if ((void *)p->br == MAP_FAILED || (void *)p->base == MAP_FAILED) {
        pbuf_unmap(p);
        return -ENOMEM;
    }
    memset(&reg, 0, sizeof reg);
    reg.ring_addr = (uint64_t)(uintptr_t)p->br;
    reg.ring_entries = entries;
    reg.bgid = (__u16)bgid;
    rc = sys_register(r->fd, IORING_REGISTER_PBUF_RING, &reg, 1);
    if (rc < 0) {
        rc = -errno;
        pbuf_unmap(p);
        return rc;
    }
    for (i = 0; i < entries; i++)
        pbuf_add(p, i);
    pbuf_publish(p);
    *out = p;
    return 0;
}

/* Unregister (while the ring is open) and unmap; or, with r NULL (the ring is
 * closed already), unmap only. */
void iou_pbuf_close(iou_ring *r, iou_pbuf *p)
{
    struct io_uring_buf_reg reg;

    if (!p)
        return;
    if (r) {
        memset(&reg, 0, sizeof reg);
        reg.bgid = (__u16)p->bgid;
        sys_register(r->fd, IORING_UNREGISTER_PBUF_RING, &reg, 1);
    }
    pbuf_unmap(p);
}

char *iou_pbuf_data(iou_pbuf *p, unsigned bid)
{
    return p->base + (size_t)(bid % p->entries) * p->size;
}

/* Gives n buffers back at once, with one publish: the engine copies the bytes
 * of a batch of completions out first, then returns the batch's buffers. */
void iou_pbuf_recycle_many(iou_pbuf *p, const unsigned *bids, int n)
{
    int i;

    for (i = 0; i < n; i++)
        pbuf_add(p, bids[i] % p->entries);
    pbuf_publish(p);
}
