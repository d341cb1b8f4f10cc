"""cffi build script (API mode) for the io_uring shim: ``anyio_iocp._engines.io_uring._uring``.

Compiled against the kernel's own ``<linux/io_uring.h>`` (Debian: linux-libc-dev);
no liburing is needed at build or run time.
"""

import os
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent

CDEF = """
typedef struct iou_ring iou_ring;
typedef int... socklen_t;
struct iovec { void *iov_base; size_t iov_len; };
struct msghdr {
    void *msg_name;
    socklen_t msg_namelen;
    struct iovec *msg_iov;
    size_t msg_iovlen;
    void *msg_control;
    size_t msg_controllen;
    int msg_flags;
    ...;
};
typedef struct iou_cqe {
    uint64_t user_data;
    int32_t res;
    uint32_t flags;
} iou_cqe;
typedef struct iou_quiet {
    uint32_t *done;
    uint8_t *watch;
    unsigned slots;
    uint64_t completed;
    uint64_t skipped;
} iou_quiet;

int iou_open(iou_ring **out, unsigned entries, unsigned cq_entries, unsigned flags);
void iou_close(iou_ring *r);
int iou_fd(iou_ring *r);
unsigned iou_features(iou_ring *r);
unsigned iou_sq_entries(iou_ring *r);
unsigned iou_cq_entries(iou_ring *r);
unsigned iou_cq_overflow(iou_ring *r);
unsigned iou_sq_flags(iou_ring *r);
unsigned iou_unsubmitted(iou_ring *r);
unsigned iou_cq_ready(iou_ring *r);
unsigned iou_sq_space(iou_ring *r);

int iou_prep_recv(iou_ring *r, int fd, void *buf, unsigned len, int msg_flags,
                  uint64_t user_data);
int iou_prep_send(iou_ring *r, int fd, const void *buf, unsigned len, int msg_flags,
                  uint64_t user_data);
int iou_prep_send_quiet(iou_ring *r, int fd, const char *buf, unsigned len, int msg_flags,
                        unsigned slot);
void iou_set_quiet(iou_ring *r, iou_quiet *q);
int iou_prep_recvmsg(iou_ring *r, int fd, struct msghdr *msg, int msg_flags,
                     uint64_t user_data);
int iou_prep_sendmsg(iou_ring *r, int fd, const struct msghdr *msg, int msg_flags,
                     uint64_t user_data);
int iou_prep_recv_select(iou_ring *r, int fd, unsigned bgid, uint64_t user_data);
int iou_prep_recv_multishot(iou_ring *r, int fd, unsigned bgid, unsigned total_cap,
                            uint64_t user_data);
typedef struct iou_pbuf iou_pbuf;
int iou_pbuf_open(iou_ring *r, iou_pbuf **out, unsigned bgid, unsigned entries, unsigned size);
void iou_pbuf_close(iou_ring *r, iou_pbuf *p);
char *iou_pbuf_data(iou_pbuf *p, unsigned bid);
void iou_pbuf_recycle_many(iou_pbuf *p, const unsigned *bids, int n);
int iou_prep_accept(iou_ring *r, int fd, int multishot, uint64_t user_data);
int iou_accept_now(int fd);
int iou_prep_poll(iou_ring *r, int fd, unsigned events, uint64_t user_data);
int iou_prep_cancel(iou_ring *r, uint64_t target, uint64_t user_data);
int iou_prep_close(iou_ring *r, int fd, uint64_t user_data);
int iou_prep_nop(iou_ring *r, uint64_t user_data);
int iou_set_last_flags(iou_ring *r, unsigned flags);
int iou_prep_chain(iou_ring *r, int op, int fd, void *const *bufs, const unsigned *lens,
                   const uint64_t *user_data, int msg_flags, unsigned n);
int iou_submit(iou_ring *r, unsigned wait_nr);
int iou_reap(iou_ring *r, iou_cqe *out, int max);
int iou_reap_columns(iou_ring *r, uint64_t *user_data, int32_t *res, uint32_t *flags, int max);
int iou_probe(iou_ring *r, unsigned char *supported, int n);

#define IORING_OP_NOP ...
#define IORING_OP_ACCEPT ...
#define IORING_OP_ASYNC_CANCEL ...
#define IORING_OP_POLL_ADD ...
#define IORING_OP_CLOSE ...
#define IORING_OP_SEND ...
#define IORING_OP_RECV ...
#define IORING_OP_RECVMSG ...
#define IORING_OP_SENDMSG ...
#define IORING_CQE_F_MORE ...
#define IORING_CQE_F_BUFFER ...
#define IORING_CQE_BUFFER_SHIFT ...
#define IOSQE_IO_LINK ...
#define IORING_SETUP_SUBMIT_ALL ...
#define IORING_SETUP_COOP_TASKRUN ...
#define IORING_SETUP_SINGLE_ISSUER ...
#define IORING_FEAT_NODROP ...
#define IORING_SQ_CQ_OVERFLOW ...
#define IORING_FEAT_FAST_POLL ...
#define MSG_NOSIGNAL ...
#define MSG_WAITALL ...
#define MSG_DONTWAIT ...
"""

#: ANYIO_IOCP_SANITIZE=address builds the shim with AddressSanitizer (for
#: scripts/sanitize.sh; Python then needs LD_PRELOAD of libasan)
SANITIZE = os.environ.get("ANYIO_IOCP_SANITIZE", "")
SANITIZE_FLAGS = [f"-fsanitize={SANITIZE}", "-fno-omit-frame-pointer", "-g"] if SANITIZE else []

#: cffi's wrapper of each C function lets go of the GIL before the call and
#: takes it back after (PyEval_SaveThread, PyEval_RestoreThread), as a
#: function that may block needs.  The shim's functions return at once, but
#: iou_submit, so they keep the GIL: under callgrind the two steps cost some
#: 600 instructions a call (``iou_cq_ready`` itself is a few loads), and the
#: engine makes several such calls per scheduler pass (docs/performance.md,
#: thirteenth pass).  iou_submit lets go of the GIL itself while it is in the
#: kernel, between IOU_KERNEL_BEGIN and IOU_KERNEL_END: the kernel may do the
#: submitted sends there (a review measured a submit of 32 sends of 128 KiB
#: at about 1 ms, during which another thread could not run), or wait.  The
#: wrappers come after this source in the generated module, so the macros
#: redefined at its end are theirs.
KERNEL_WITHOUT_GIL = """
#define IOU_KERNEL_BEGIN { PyThreadState *iou_saved_thread = PyEval_SaveThread();
#define IOU_KERNEL_END PyEval_RestoreThread(iou_saved_thread); }
"""
KEEP_GIL_IN_WRAPPERS = """
#undef Py_BEGIN_ALLOW_THREADS
#undef Py_END_ALLOW_THREADS
#define Py_BEGIN_ALLOW_THREADS {
#define Py_END_ALLOW_THREADS }
"""

ffibuilder = FFI()
ffibuilder.cdef(CDEF)
ffibuilder.set_source(
    "anyio_iocp._engines.io_uring._uring",
    KERNEL_WITHOUT_GIL + (HERE / "uring_shim.c").read_text() + KEEP_GIL_IN_WRAPPERS,
    extra_compile_args=["-O2" if not SANITIZE else "-O1", "-std=gnu11", "-Wall", *SANITIZE_FLAGS],
    extra_link_args=SANITIZE_FLAGS,
)

if __name__ == "__main__":
    ffibuilder.compile(tmpdir=str(HERE.parent / "build" / "cffi"), verbose=True)
