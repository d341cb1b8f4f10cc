/*
 * floor.c - one-thread epoll server: the "C floor" reference for the
 * anyio-iocp benchmarks.  Same protocol as bench/server_app.py:
 *
 *   floor echo  [BACKLOG]   echo back every received chunk
 *   floor hello [BACKLOG]   read "hello\n", reply "hello back\n", then read
 *                           until the client closes, then close
 *   floor sink  [BACKLOG]   read and discard until EOF, then close
 *
 * Listens on 127.0.0.1 with an ephemeral port and prints the port on one
 * line of stdout.  Level-triggered epoll, non-blocking sockets, one recv()
 * per readiness event (like the Python event loops).  Runs until killed.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "floor_common.h"

#define MAX_EVENTS 1024
#define RECV_SIZE 65536

struct conn {
    uint8_t open;
    uint8_t replied;       /* hello: reply sent, now waiting for EOF */
    uint8_t hello_len;
    char hello[HELLO_BUF];
    uint8_t *pending;      /* echo: bytes the kernel did not take yet */
    size_t pending_off, pending_len;
};

static enum mode mode;
static int ep;
static struct conn *conns;
static size_t nconns;
static uint8_t rbuf[RECV_SIZE];
static const char REPLY[] = "hello back\n";

static void set_events(int fd, uint32_t events) {
    struct epoll_event ev = {.events = events, .data.fd = fd};
    if (epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev) != 0) die("epoll_ctl");
}

static void drop(int fd) {
    struct conn *c = &conns[fd];
    free(c->pending);
    memset(c, 0, sizeof(*c));
    close(fd); /* also removes it from the epoll set */
}

static void accept_all(int lfd) {
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            /* EAGAIN: done; anything else (ECONNABORTED, EMFILE...): retry later */
            return;
        }
        if ((size_t)fd >= nconns) {
            close(fd);
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        conns[fd].open = 1;
        struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0) die("epoll_ctl");
    }
}

/* Write c's pending bytes; 0 when all written or would block, -1 on error. */
static int flush_pending(int fd, struct conn *c) {
    while (c->pending_off < c->pending_len) {
        ssize_t n = send(fd, c->pending + c->pending_off, c->pending_len - c->pending_off,
                         MSG_NOSIGNAL);
        if (n < 0) return (errno == EAGAIN || errno == EWOULDBLOCK) ? 0 : -1;
        c->pending_off += (size_t)n;
    }
    free(c->pending);
    c->pending = NULL;
    c->pending_off = c->pending_len = 0;
    set_events(fd, EPOLLIN); /* resume reading */
    return 0;
}

static int on_echo(int fd, struct conn *c, ssize_t n) {
    ssize_t w = send(fd, rbuf, (size_t)n, MSG_NOSIGNAL);
    if (w < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK) return -1;
        w = 0;
    }
    if (w == n) return 0;
    /* backpressure: keep the rest, stop reading until it is written */
    c->pending_len = (size_t)(n - w);
    c->pending_off = 0;
    c->pending = malloc(c->pending_len);
    if (!c->pending) return -1;
    memcpy(c->pending, rbuf + w, c->pending_len);
    set_events(fd, EPOLLOUT);
    return 0;
}

static int on_hello(int fd, struct conn *c, ssize_t n) {
    if (c->replied) return 0; /* discard until EOF */
    if ((size_t)n > (size_t)(HELLO_BUF - c->hello_len)) return -1;
    memcpy(c->hello + c->hello_len, rbuf, (size_t)n);
    c->hello_len = (uint8_t)(c->hello_len + n);
    if (!memmem(c->hello, c->hello_len, "hello\n", 6)) return 0;
    c->replied = 1;
    ssize_t w = send(fd, REPLY, sizeof(REPLY) - 1, MSG_NOSIGNAL);
    return w == (ssize_t)(sizeof(REPLY) - 1) ? 0 : -1;
}

static void on_readable(int fd) {
    struct conn *c = &conns[fd];
    ssize_t n = recv(fd, rbuf, sizeof(rbuf), 0);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    if (n <= 0) { /* EOF or error (e.g. reset): close quietly */
        drop(fd);
        return;
    }
    int rc = 0;
    if (mode == M_ECHO)
        rc = on_echo(fd, c, n);
    else if (mode == M_HELLO)
        rc = on_hello(fd, c, n);
    if (rc != 0) drop(fd);
}

int main(int argc, char **argv) {
    int backlog;
    mode = parse_command_line(argc, argv, &backlog);

    nconns = (size_t)raise_nofile();
    conns = calloc(nconns, sizeof(*conns));
    if (!conns) die("calloc");
    ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) die("epoll_create1");
    int lfd = listen_on_loopback(backlog, SOCK_NONBLOCK);
    struct epoll_event lev = {.events = EPOLLIN, .data.fd = lfd};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &lev) != 0) die("epoll_ctl");

    struct epoll_event evs[MAX_EVENTS];
    for (;;) {
        int k = epoll_wait(ep, evs, MAX_EVENTS, -1);
        if (k < 0) {
            if (errno == EINTR) continue;
            die("epoll_wait");
        }
        for (int i = 0; i < k; i++) {
            int fd = evs[i].data.fd;
            if (fd == lfd) {
                accept_all(lfd);
                continue;
            }
            struct conn *c = &conns[fd];
            if (!c->open) continue; /* closed earlier in this batch */
            if (c->pending) {
                if ((evs[i].events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) &&
                    flush_pending(fd, c) != 0)
                    drop(fd);
                continue;
            }
            on_readable(fd);
        }
    }
}
