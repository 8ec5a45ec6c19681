/*
 * cocoon-spawner: starts processes for the guest agent (issue 14, the exec round trip).
 *
 * The agent is Node.js: a child_process.spawn forks the whole node process, which under TCG
 * costs tens of milliseconds per exec. This helper is small and static, so its fork is cheap.
 * The agent starts it once and sends it requests on its stdin; it answers on its stdout.
 *
 * Requests (agent → spawner): a 4-byte little-endian length, then that many bytes of
 * NUL-terminated fields:
 *   spawn ID FLAGS UID GID CWD ARGC ARGV... ENV...
 *     FLAGS: 'i' gives the program a stdin pipe (else /dev/null), 's' a new session.
 *     UID, GID: decimal, or "-" to keep the spawner's.
 *   release ID
 *     The agent has opened its ends of the pipes of ID (through /proc/PID/fd/N, as Node cannot
 *     receive a descriptor over a pipe): the spawner closes its copies.
 *
 * Replies (spawner → agent), one line each:
 *   ok ID PID STDIN_FD STDOUT_FD STDERR_FD   the program runs; the FDs are the spawner's
 *                                            descriptors of the agent's ends ("-": no stdin)
 *   err ID ERRNO                             it could not be started (chdir, setuid, exec...)
 *   exit PID code N | exit PID signal N      a program started here ended (reaped)
 *
 * The program gets the signal dispositions and mask of a fresh process and no descriptor but
 * 0, 1 and 2 (everything else here is close-on-exec). An exec error comes back through a
 * close-on-exec pipe: EOF means exec worked. When the agent goes away (EOF on stdin) the
 * spawner exits; its programs are inherited by init, as the agent's own children would be.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <stdarg.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_HELD 4096

/* The agent's ends of a started program's pipes, kept open until the agent has its own. */
struct held {
    char id[32];
    int fds[3];
};
static struct held held[MAX_HELD];

static void write_all(const char *buf, size_t len) {
    while (len > 0) {
        ssize_t n = write(1, buf, len);
        if (n < 0) {
            if (errno == EINTR) continue;
            _exit(0); /* the agent is gone */
        }
        buf += n;
        len -= (size_t)n;
    }
}

static void reply(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void reply(const char *fmt, ...) {
    char line[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n > 0) write_all(line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
}

static void close_fds(int *fds, int n) {
    for (int i = 0; i < n; i++)
        if (fds[i] >= 0) close(fds[i]);
}

static const char *env_path(char **env) {
    for (char **e = env; *e; e++)
        if (strncmp(*e, "PATH=", 5) == 0) return *e + 5;
    /* as libuv (node's spawn): else the spawner's own PATH (the agent's), else the default */
    const char *own = getenv("PATH");
    return own ? own : "/usr/bin:/bin";
}

/* execvpe, but searching the PATH of the program's environment (as node's spawn does). */
static int exec_program(char **argv, char **env) {
    const char *file = argv[0];
    if (!*file) return ENOENT;
    if (strchr(file, '/')) {
        execve(file, argv, env);
        return errno;
    }
    int err = ENOENT;
    const char *p = env_path(env);
    char path[4096];
    for (;;) {
        const char *colon = strchrnul(p, ':');
        size_t dirlen = (size_t)(colon - p);
        if (dirlen == 0) {
            snprintf(path, sizeof path, "%s", file);
        } else {
            snprintf(path, sizeof path, "%.*s/%s", (int)dirlen, p, file);
        }
        execve(path, argv, env);
        /* as execvp: a program that is there but cannot be run wins over "not found" */
        if (errno == EACCES) err = EACCES;
        else if (errno != ENOENT && errno != ENOTDIR && errno != ESTALE && errno != ELOOP &&
                 errno != ENAMETOOLONG)
            return errno;
        if (!*colon) break;
        p = colon + 1;
    }
    return err;
}

static void child_fail(int errpipe, int err) {
    while (write(errpipe, &err, sizeof err) < 0 && errno == EINTR) {
    }
    _exit(127);
}

/* In the forked child: become the program, or report why not on errpipe. */
static void become(int in, int out, int err, int errpipe, int setsid_, const char *uid,
                   const char *gid, const char *cwd, char **argv, char **env) {
    sigset_t none;
    sigemptyset(&none);
    for (int s = 1; s < NSIG; s++) signal(s, SIG_DFL);
    sigprocmask(SIG_SETMASK, &none, NULL);
    if (setsid_ && setsid() < 0) child_fail(errpipe, errno);
    if (in < 0) in = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (in < 0 || dup2(in, 0) < 0 || dup2(out, 1) < 0 || dup2(err, 2) < 0) child_fail(errpipe, errno);
    if (*cwd && chdir(cwd) < 0) child_fail(errpipe, errno);
    if (strcmp(uid, "-") != 0 || strcmp(gid, "-") != 0) (void)setgroups(0, NULL);
    if (strcmp(gid, "-") != 0 && setgid((gid_t)strtoul(gid, NULL, 10)) < 0) child_fail(errpipe, errno);
    if (strcmp(uid, "-") != 0 && setuid((uid_t)strtoul(uid, NULL, 10)) < 0) child_fail(errpipe, errno);
    child_fail(errpipe, exec_program(argv, env));
}

static void spawn_request(char **f, int n) {
    /* spawn ID FLAGS UID GID CWD ARGC ARGV... ENV... */
    if (n < 7) return;
    const char *id = f[1], *flags = f[2];
    int argc = atoi(f[6]);
    if (strlen(id) >= sizeof held[0].id) return;
    if (argc < 1 || 7 + argc > n) {
        reply("err %s %d\n", id, EINVAL);
        return;
    }
    char **argv = &f[7];
    char **env = &f[7 + argc + 1]; /* the fields are NULL-separated below: see handle() */
    int slot = -1;
    for (int i = 0; i < MAX_HELD; i++)
        if (!held[i].id[0]) {
            slot = i;
            break;
        }
    if (slot < 0) {
        reply("err %s %d\n", id, EMFILE);
        return;
    }
    int in[2] = {-1, -1}, out[2] = {-1, -1}, err[2] = {-1, -1}, ep[2] = {-1, -1};
    int want_in = strchr(flags, 'i') != NULL;
    if ((want_in && pipe2(in, O_CLOEXEC) < 0) || pipe2(out, O_CLOEXEC) < 0 || pipe2(err, O_CLOEXEC) < 0 ||
        pipe2(ep, O_CLOEXEC) < 0) {
        int e = errno;
        close_fds(in, 2), close_fds(out, 2), close_fds(err, 2), close_fds(ep, 2);
        reply("err %s %d\n", id, e);
        return;
    }
    pid_t pid = fork();
    if (pid == 0) {
        close(ep[0]);
        become(in[0], out[1], err[1], ep[1], strchr(flags, 's') != NULL, f[3], f[4], f[5], argv, env);
    }
    int e = pid < 0 ? errno : 0;
    int child_ends[] = {in[0], out[1], err[1], ep[1]};
    close_fds(child_ends, 4);
    if (pid > 0) {
        ssize_t r;
        while ((r = read(ep[0], &e, sizeof e)) < 0 && errno == EINTR) {
        }
        if (r <= 0) e = 0; /* EOF: exec closed the pipe */
        else waitpid(pid, NULL, 0); /* reaped here, so no exit line for a program never started */
    }
    close(ep[0]);
    if (e) {
        int ours[] = {in[1], out[0], err[0]};
        close_fds(ours, 3);
        reply("err %s %d\n", id, e);
        return;
    }
    snprintf(held[slot].id, sizeof held[slot].id, "%s", id);
    held[slot].fds[0] = in[1];
    held[slot].fds[1] = out[0];
    held[slot].fds[2] = err[0];
    char stdin_fd[16] = "-";
    if (in[1] >= 0) snprintf(stdin_fd, sizeof stdin_fd, "%d", in[1]);
    reply("ok %s %d %s %d %d\n", id, (int)pid, stdin_fd, out[0], err[0]);
}

static void release_request(char **f, int n) {
    if (n < 2) return;
    for (int i = 0; i < MAX_HELD; i++)
        if (held[i].id[0] && strcmp(held[i].id, f[1]) == 0) {
            close_fds(held[i].fds, 3);
            held[i].id[0] = 0;
            return;
        }
}

/*
 * One request: split the NUL-terminated fields. For spawn, ARGV and ENV each need a NULL
 * terminator; the array gets one after ARGV's fields (moving ENV one place on) and one at the end.
 */
static void handle(char *buf, size_t len) {
    int count = 0;
    for (size_t i = 0; i < len; i++)
        if (buf[i] == 0) count++;
    char **f = calloc((size_t)count + 2, sizeof *f);
    if (!f) return;
    int n = 0;
    for (size_t i = 0; i < len && n < count; i = i + strlen(buf + i) + 1) f[n++] = buf + i;
    if (n >= 1 && strcmp(f[0], "spawn") == 0 && n >= 7) {
        int argc = atoi(f[6]);
        if (argc >= 1 && 7 + argc <= n) {
            memmove(&f[7 + argc + 1], &f[7 + argc], (size_t)(n - 7 - argc) * sizeof *f);
            f[7 + argc] = NULL;
            f[n + 1] = NULL;
        }
        spawn_request(f, n);
    } else if (n >= 1 && strcmp(f[0], "release") == 0) {
        release_request(f, n);
    }
    free(f);
}

static void reap(void) {
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        if (WIFSIGNALED(status)) reply("exit %d signal %d\n", (int)pid, WTERMSIG(status));
        else if (WIFEXITED(status)) reply("exit %d code %d\n", (int)pid, WEXITSTATUS(status));
    }
}

int main(void) {
    /* 0, 1 and 2 must be open, so that no pipe made here takes their numbers */
    int fd;
    while ((fd = open("/dev/null", O_RDWR)) >= 0 && fd <= 2) {
    }
    if (fd > 2) close(fd);
    signal(SIGPIPE, SIG_IGN); /* a write to a gone agent fails with EPIPE instead */
    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    sigprocmask(SIG_BLOCK, &chld, NULL);
    int sfd = signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
    if (sfd < 0) {
        perror("cocoon-spawner: signalfd");
        return 1;
    }
    fcntl(0, F_SETFD, FD_CLOEXEC);
    fcntl(1, F_SETFD, FD_CLOEXEC);
    size_t cap = 1 << 16, have = 0;
    char *buf = malloc(cap);
    if (!buf) return 1;
    reply("ready %d\n", (int)getpid());
    for (;;) {
        struct pollfd pfd[2] = {{.fd = 0, .events = POLLIN}, {.fd = sfd, .events = POLLIN}};
        if (poll(pfd, 2, -1) < 0) {
            if (errno == EINTR) continue;
            perror("cocoon-spawner: poll");
            return 1;
        }
        if (pfd[1].revents) {
            struct signalfd_siginfo si;
            while (read(sfd, &si, sizeof si) > 0) {
            }
            reap();
        }
        if (pfd[0].revents) {
            if (have == cap) {
                char *bigger = realloc(buf, cap * 2);
                if (!bigger) return 1;
                buf = bigger;
                cap *= 2;
            }
            ssize_t r = read(0, buf + have, cap - have);
            if (r < 0 && errno == EINTR) continue;
            if (r <= 0) return 0; /* the agent is gone */
            have += (size_t)r;
            size_t off = 0;
            while (have - off >= 4) {
                uint32_t len;
                memcpy(&len, buf + off, 4);
                if (have - off - 4 < len) break;
                handle(buf + off + 4, len);
                off += 4 + len;
            }
            memmove(buf, buf + off, have - off);
            have -= off;
            /* a request larger than the buffer: grow it before the next read */
            if (have >= 4) {
                uint32_t len;
                memcpy(&len, buf, 4);
                while (cap < (size_t)len + 4) {
                    char *bigger = realloc(buf, cap * 2);
                    if (!bigger) return 1;
                    buf = bigger;
                    cap *= 2;
                }
            }
        }
    }
}
