/*
 * floor_common.h - what the two C floor servers (bench/floor.c, epoll, and
 * bench/floor_uring.c, io_uring) share: their command line, their exit on
 * an error, the descriptor limit and the listening socket.  Header-only:
 * bench/compile_c.py compiles each floor from its one .c file.
 */
#ifndef FLOOR_COMMON_H
#define FLOOR_COMMON_H

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>

/* the bytes a hello request may take before its "\n" */
#define HELLO_BUF 64

enum mode { M_ECHO, M_HELLO, M_SINK };

/* the program's name in its messages ("floor", "floor_uring") */
static const char *floor_name = "floor";

static void die(const char *what) {
    fprintf(stderr, "%s: %s: %s\n", floor_name, what, strerror(errno));
    exit(2);
}

static rlim_t raise_nofile(void) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) die("getrlimit");
    rl.rlim_cur = rl.rlim_max == RLIM_INFINITY ? 1048576 : rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0) die("setrlimit");
    return rl.rlim_cur;
}

/* MODE [BACKLOG] (exits 2 with the usage or the accepted modes otherwise) */
static enum mode parse_command_line(int argc, char **argv, int *backlog) {
    enum mode mode;
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: %s echo|hello|sink [BACKLOG]\n", floor_name);
        exit(2);
    }
    if (strcmp(argv[1], "echo") == 0)
        mode = M_ECHO;
    else if (strcmp(argv[1], "hello") == 0)
        mode = M_HELLO;
    else if (strcmp(argv[1], "sink") == 0)
        mode = M_SINK;
    else {
        fprintf(stderr, "%s: unknown mode %s (accepted: echo, hello, sink)\n", floor_name,
                argv[1]);
        exit(2);
    }
    *backlog = argc == 3 ? atoi(argv[2]) : 4096;
    return mode;
}

/* A listening socket on 127.0.0.1 with an ephemeral port (extra_type:
 * flags for socket(), e.g. SOCK_NONBLOCK), its port printed on one line. */
static int listen_on_loopback(int backlog, int extra_type) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | extra_type, 0);
    if (fd < 0) die("socket");
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in addr = {.sin_family = AF_INET};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&addr, sizeof(addr)) != 0) die("bind");
    if (listen(fd, backlog) != 0) die("listen");
    socklen_t len = sizeof(addr);
    if (getsockname(fd, (struct sockaddr *)&addr, &len) != 0) die("getsockname");
    printf("%d\n", ntohs(addr.sin_port));
    fflush(stdout);
    return fd;
}

#endif
