/*
 * cocoon-console: gives a process a new pseudo-terminal and hands the terminal's master to a
 * runtime caller's console socket (runc's --console-socket protocol), then runs the process.
 *
 *   cocoon-console SOCKET PROGRAM [ARG...]
 *
 * Node can neither open a pty nor pass a file descriptor over a unix socket, so this small
 * helper does both and then execs cocoon-runtime's relay, which sees the pty slave as its
 * stdin, stdout and stderr and as its controlling terminal (so a resize on the master reaches
 * it as SIGWINCH). The message sent is the pty's name as data with one SCM_RIGHTS message
 * carrying the master fd, as conmon and containerd's runc shim expect.
 *
 * On failure it prints one line to stderr and exits 125 without running PROGRAM.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <termios.h>
#include <unistd.h>

static int fail(const char *what) {
  fprintf(stderr, "cocoon-console: %s: %s\n", what, strerror(errno));
  return 125;
}

static int send_master(const char *socket_path, int master, const char *name) {
  struct sockaddr_un addr;
  if (strlen(socket_path) >= sizeof(addr.sun_path)) {
    errno = ENAMETOOLONG;
    return -1;
  }
  int sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (sock < 0) return -1;
  memset(&addr, 0, sizeof(addr));
  addr.sun_family = AF_UNIX;
  strcpy(addr.sun_path, socket_path);
  if (connect(sock, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
    int e = errno;
    close(sock);
    errno = e;
    return -1;
  }
  union {
    char buf[CMSG_SPACE(sizeof(int))];
    struct cmsghdr align;
  } control;
  memset(&control, 0, sizeof(control));
  struct iovec iov = {.iov_base = (void *)name, .iov_len = strlen(name)};
  struct msghdr msg = {0};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control.buf;
  msg.msg_controllen = sizeof(control.buf);
  struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
  cmsg->cmsg_level = SOL_SOCKET;
  cmsg->cmsg_type = SCM_RIGHTS;
  cmsg->cmsg_len = CMSG_LEN(sizeof(int));
  memcpy(CMSG_DATA(cmsg), &master, sizeof(int));
  ssize_t n;
  do n = sendmsg(sock, &msg, 0);
  while (n < 0 && errno == EINTR);
  int e = errno;
  close(sock);
  errno = e;
  return n < 0 ? -1 : 0;
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: cocoon-console SOCKET PROGRAM [ARG...]\n");
    return 125;
  }
  int master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
  if (master < 0) return fail("posix_openpt");
  if (grantpt(master) < 0 || unlockpt(master) < 0) return fail("unlockpt");
  char name[256];
  if (ptsname_r(master, name, sizeof(name)) != 0) return fail("ptsname");
  int slave = open(name, O_RDWR | O_NOCTTY);
  if (slave < 0) return fail("open the pty slave");
  /*
   * The line discipline that matters is the guest's: this host-side terminal only carries bytes
   * to and from it. Raw from the start (no echo, no line editing, no \n -> \r\n on output), so
   * input the receiver writes before the relay runs is neither echoed nor rewritten, and the
   * guest's output is not translated a second time.
   */
  struct termios raw;
  if (tcgetattr(slave, &raw) < 0) return fail("tcgetattr");
  cfmakeraw(&raw);
  if (tcsetattr(slave, TCSANOW, &raw) < 0) return fail("tcsetattr");
  if (send_master(argv[1], master, name) < 0) return fail("send the pty master to the console socket");
  close(master);
  /* A session of its own with the pty as controlling terminal: resizes arrive as SIGWINCH. */
  if (setsid() < 0) return fail("setsid");
  if (ioctl(slave, TIOCSCTTY, 0) < 0) return fail("TIOCSCTTY");
  for (int fd = 0; fd < 3; fd++)
    if (dup2(slave, fd) < 0) return fail("dup2");
  if (slave > 2) close(slave);
  execvp(argv[2], argv + 2);
  return fail("exec");
}
