/*
 * cocoon-pty: runs a command on a new pseudo-terminal, for processes that asked for a terminal.
 *
 *   cocoon-pty ROWS COLS -- PROGRAM [ARGS...]
 *
 * The guest agent is Node.js, which cannot allocate a pty; this helper does it. The program
 * runs in a new session with the pty slave as its controlling terminal and stdio. The helper
 * copies its own stdin to the pty master and the master to its stdout. A line "ROWS COLS\n"
 * on file descriptor 3 (if open) resizes the terminal, which sends the program SIGWINCH.
 * SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1 and SIGUSR2 sent to the helper are passed on to the
 * program. The helper exits with the program's exit code, or 128+N if signal N killed it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

static volatile sig_atomic_t child_pid = -1;

static void forward(int sig) {
    if (child_pid > 0) kill(child_pid, sig);
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

static void set_size(int master, const char *line) {
    unsigned rows = 0, cols = 0;
    if (sscanf(line, "%u %u", &rows, &cols) == 2 && rows > 0 && cols > 0) {
        struct winsize ws = {.ws_row = (unsigned short)rows, .ws_col = (unsigned short)cols};
        ioctl(master, TIOCSWINSZ, &ws);
    }
}

int main(int argc, char **argv) {
    if (argc < 5 || strcmp(argv[3], "--") != 0) {
        fprintf(stderr, "usage: cocoon-pty ROWS COLS -- PROGRAM [ARGS...]\n");
        return 125;
    }
    int master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (master < 0 || grantpt(master) < 0 || unlockpt(master) < 0) {
        perror("cocoon-pty: cannot allocate a pseudo-terminal");
        return 125;
    }
    set_size(master, "0 0");
    char size[64];
    snprintf(size, sizeof size, "%s %s", argv[1], argv[2]);
    set_size(master, size);
    const char *slave_name = ptsname(master);
    if (!slave_name) {
        perror("cocoon-pty: ptsname");
        return 125;
    }
    /* The exec status pipe tells the parent whether execvp worked (close-on-exec: EOF = ok). */
    int status_pipe[2];
    if (pipe2(status_pipe, O_CLOEXEC) < 0) {
        perror("cocoon-pty: pipe");
        return 125;
    }
    pid_t pid = fork();
    if (pid < 0) {
        perror("cocoon-pty: fork");
        return 125;
    }
    if (pid == 0) {
        close(status_pipe[0]);
        setsid();
        int slave = open(slave_name, O_RDWR);
        if (slave < 0) _exit(125);
        ioctl(slave, TIOCSCTTY, 0);
        dup2(slave, 0);
        dup2(slave, 1);
        dup2(slave, 2);
        if (slave > 2) close(slave);
        close(master);
        close(3);
        signal(SIGPIPE, SIG_DFL);
        execvp(argv[4], &argv[4]);
        int err = errno;
        if (write(status_pipe[1], &err, sizeof err) < 0) _exit(127);
        _exit(err == ENOENT ? 127 : 126);
    }
    close(status_pipe[1]);
    int exec_err = 0;
    if (read(status_pipe[0], &exec_err, sizeof exec_err) == (ssize_t)sizeof exec_err) {
        fprintf(stderr, "cocoon-pty: cannot execute %s: %s\n", argv[4], strerror(exec_err));
        waitpid(pid, NULL, 0);
        return exec_err == ENOENT ? 127 : 126;
    }
    close(status_pipe[0]);
    child_pid = pid;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = forward;
    sa.sa_flags = SA_RESTART;
    int forwarded[] = {SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2};
    for (size_t i = 0; i < sizeof forwarded / sizeof forwarded[0]; i++) sigaction(forwarded[i], &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    int control = fcntl(3, F_GETFD) >= 0 ? 3 : -1;
    char ctl[128];
    size_t ctl_len = 0;
    int stdin_open = 1;
    char buf[16384];
    for (;;) {
        struct pollfd fds[3] = {
            {.fd = master, .events = POLLIN},
            {.fd = stdin_open ? 0 : -1, .events = POLLIN},
            {.fd = control, .events = POLLIN},
        };
        if (poll(fds, 3, -1) < 0) {
            if (errno == EINTR) continue;
            break;
        }
        if (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) {
            ssize_t n = read(master, buf, sizeof buf);
            if (n <= 0) break; /* EIO: every slave fd is closed, the program is gone */
            if (write_all(1, buf, (size_t)n) < 0) break;
        }
        if (stdin_open && (fds[1].revents & (POLLIN | POLLHUP | POLLERR))) {
            ssize_t n = read(0, buf, sizeof buf);
            if (n <= 0) {
                /* stdin closed: send the terminal's EOF character, as typing Ctrl-D would */
                stdin_open = 0;
                struct termios t;
                char eof = 4;
                if (tcgetattr(master, &t) == 0) eof = (char)t.c_cc[VEOF];
                write_all(master, &eof, 1);
            } else {
                write_all(master, buf, (size_t)n);
            }
        }
        if (control >= 0 && (fds[2].revents & (POLLIN | POLLHUP | POLLERR))) {
            ssize_t n = read(control, ctl + ctl_len, sizeof ctl - 1 - ctl_len);
            if (n <= 0) {
                control = -1;
            } else {
                ctl_len += (size_t)n;
                char *nl;
                while ((nl = memchr(ctl, '\n', ctl_len)) != NULL) {
                    *nl = '\0';
                    set_size(master, ctl);
                    size_t used = (size_t)(nl - ctl) + 1;
                    memmove(ctl, nl + 1, ctl_len - used);
                    ctl_len -= used;
                }
                if (ctl_len == sizeof ctl - 1) ctl_len = 0;
            }
        }
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
    return WEXITSTATUS(status);
}
