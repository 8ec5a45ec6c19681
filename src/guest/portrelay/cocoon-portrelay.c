/*
 * cocoon-portrelay: carries the bytes of one virtio-serial port for the guest agent (issue 14,
 * stream throughput). Opt-in with `cocoon.portrelay=1` on the kernel command line.
 *
 * Node can read a character device only through its thread pool, one read(2) per hop, and a
 * virtio-serial port returns at most one 4 KiB buffer per read (host → guest) and takes at
 * most 32 KiB per write: the agent paid a thread hop, a promise and a stream push per 4 KiB.
 * This helper does the small reads and writes natively and hands the agent pipes, which Node
 * reads and writes from its event loop in 64 KiB pieces.
 *
 *   cocoon-portrelay DEVICE
 *
 * A session is one host connection: it starts with the first non-empty read (a read returns 0
 * while no host is connected, so the port is polled then) and ends when a read returns 0
 * again. For each session the helper makes two pipes and tells the agent on stdout:
 *
 *   session RFD WFD      the agent opens /proc/PID/fd/RFD (host → agent bytes) for reading
 *                        and /proc/PID/fd/WFD (agent → host bytes) for writing,
 *
 * then waits for one line on stdin ("opened") before closing its copies of those ends. The
 * session ends on either side: the host leaving closes the agent's read pipe (EOF there); the
 * agent closing its write pipe (its session is over, e.g. after a protocol error) makes the
 * helper drop the rest of that host's bytes until the host leaves, as the agent itself did.
 * EOF on stdin (the agent is gone) ends the helper.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define PORT_READ 4096
#define CHUNK (64 * 1024)
/* Port writes larger than this are cut short by the driver anyway. */
#define PORT_WRITE (32 * 1024)
#define IDLE_POLL_NS (10 * 1000 * 1000)

static int port = -1;

static void die(const char *what) {
    fprintf(stderr, "cocoon-portrelay: %s: %s\n", what, strerror(errno));
    exit(1);
}

static int write_all(int fd, const char *buf, size_t len) {
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

/* The agent's word that it has opened its ends; EOF: the agent is gone. */
static void await_opened(void) {
    char c;
    for (;;) {
        ssize_t n = read(0, &c, 1);
        if (n == 0) exit(0);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("read stdin");
        }
        if (c == '\n') return;
    }
}

/* Reads the port until the host has gone (a 0 read), dropping the bytes. */
static void drain_until_host_leaves(void) {
    char buf[PORT_READ];
    for (;;) {
        ssize_t n = read(port, buf, sizeof buf);
        if (n == 0) return;
        if (n < 0 && errno != EINTR && errno != EAGAIN) return;
    }
}

/*
 * One session: `first` bytes already read from the port. Returns when it is over and the
 * port is back to "no host" (or the host left).
 */
static void session(const char *first, size_t first_len) {
    int in[2], out[2]; /* in: port → agent; out: agent → port */
    if (pipe2(in, O_CLOEXEC) < 0 || pipe2(out, O_CLOEXEC) < 0) die("pipe");
    /* Larger pipes: fewer wakeups of the agent per MiB (best effort). */
    fcntl(in[1], F_SETPIPE_SZ, 1024 * 1024);
    fcntl(out[1], F_SETPIPE_SZ, 1024 * 1024);
    char line[64];
    int len = snprintf(line, sizeof line, "session %d %d\n", in[0], out[1]);
    if (write_all(1, line, (size_t)len) < 0) exit(0);
    await_opened();
    close(in[0]);
    close(out[1]);

    int agent_open = 1; /* the agent still reads `in` */
    if (write_all(in[1], first, first_len) < 0) agent_open = 0;
    char *buf = malloc(CHUNK);
    if (!buf) die("malloc");
    for (;;) {
        if (!agent_open) {
            /* The agent ended its session: the host's remaining bytes belong to nobody. */
            close(in[1]);
            close(out[0]);
            drain_until_host_leaves();
            break;
        }
        struct pollfd fds[2] = {{port, POLLIN, 0}, {out[0], POLLIN, 0}};
        int r = poll(fds, 2, -1);
        if (r < 0) {
            if (errno == EINTR) continue;
            die("poll");
        }
        if (fds[1].revents & (POLLIN | POLLHUP | POLLERR)) {
            ssize_t n = read(out[0], buf, CHUNK);
            if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN)) {
                agent_open = 0;
                continue;
            }
            if (n > 0) {
                for (ssize_t off = 0; off < n;) {
                    size_t want = (size_t)(n - off) < PORT_WRITE ? (size_t)(n - off) : PORT_WRITE;
                    ssize_t w = write(port, buf + off, want);
                    if (w < 0) {
                        if (errno == EINTR) continue;
                        break; /* the host is gone: its read side will say so */
                    }
                    off += w;
                }
            }
        }
        if (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) {
            /* Several 4 KiB buffers may be waiting: take what is there, one pipe write. */
            size_t got = 0;
            int host_left = 0;
            while (got + PORT_READ <= CHUNK) {
                ssize_t n = read(port, buf + got, PORT_READ);
                if (n == 0) {
                    host_left = 1;
                    break;
                }
                if (n < 0) {
                    if (errno == EINTR) continue;
                    host_left = errno != EAGAIN;
                    break;
                }
                got += (size_t)n;
                struct pollfd more = {port, POLLIN, 0};
                if (poll(&more, 1, 0) <= 0 || !(more.revents & POLLIN)) break;
            }
            if (got && write_all(in[1], buf, got) < 0) agent_open = 0;
            if (host_left) {
                close(in[1]);
                close(out[0]);
                break;
            }
        }
    }
    free(buf);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: cocoon-portrelay DEVICE\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    port = open(argv[1], O_RDWR | O_CLOEXEC);
    if (port < 0) die(argv[1]);
    if (write_all(1, "ready\n", 6) < 0) return 0;
    char first[PORT_READ];
    for (;;) {
        ssize_t n = read(port, first, sizeof first);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("read port");
        }
        if (n == 0) {
            /* No host: look again shortly (a port cannot be waited on while nobody is there). */
            struct timespec ts = {0, IDLE_POLL_NS};
            nanosleep(&ts, NULL);
            /* The agent gone (stdin EOF) ends the helper even while idle. */
            struct pollfd in = {0, POLLIN, 0};
            if (poll(&in, 1, 0) > 0 && (in.revents & (POLLIN | POLLHUP))) {
                char c;
                if (read(0, &c, 1) <= 0) return 0;
            }
            continue;
        }
        session(first, (size_t)n);
    }
}
