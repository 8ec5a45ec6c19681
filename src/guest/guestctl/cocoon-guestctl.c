/*
 * cocoon-guestctl: the kernel calls the guest agent needs and Node does not offer.
 *
 *   cocoon-guestctl reseed            mixes host randomness (stdin, at most 512 bytes) into the
 *                                     kernel's pool, credits it and re-keys the CRNG at once
 *   cocoon-guestctl shift-clock MS    moves CLOCK_REALTIME by MS milliseconds (may be negative)
 *   cocoon-guestctl freshen MS        both, in one process (a clone's first step)
 *
 * Why: a VM cloned from a template (or restored from a snapshot) starts with the same CRNG
 * state as every other clone, and with the clock of the moment the template was saved.
 * Writing to /dev/urandom only mixes bytes into the input pool: the CRNG keeps its old key
 * until its next scheduled reseed (up to a minute), so clones would read identical bytes;
 * RNDRESEEDCRNG re-keys it now. `date -s` sets whole seconds only; shifting by the offset the
 * agent measured keeps the clock within milliseconds of the host.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/random.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#define MAX_BYTES 512

static int reseed(void) {
  struct {
    struct rand_pool_info info;
    unsigned char buf[MAX_BYTES];
  } req;
  size_t n = 0;
  while (n < MAX_BYTES) {
    ssize_t r = read(0, req.buf + n, MAX_BYTES - n);
    if (r < 0) {
      perror("cocoon-guestctl: read");
      return 1;
    }
    if (r == 0) break;
    n += (size_t)r;
  }
  if (n == 0) {
    fprintf(stderr, "cocoon-guestctl: no bytes on stdin\n");
    return 2;
  }
  int fd = open("/dev/urandom", O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    perror("cocoon-guestctl: /dev/urandom");
    return 1;
  }
  req.info.entropy_count = (int)(n * 8);
  req.info.buf_size = (int)n;
  if (ioctl(fd, RNDADDENTROPY, &req.info) < 0) {
    perror("cocoon-guestctl: RNDADDENTROPY");
    return 1;
  }
  if (ioctl(fd, RNDRESEEDCRNG) < 0) {
    perror("cocoon-guestctl: RNDRESEEDCRNG");
    return 1;
  }
  close(fd);
  printf("%zu\n", n);
  return 0;
}

static int shift_clock(const char *arg) {
  char *end;
  errno = 0;
  long long ms = strtoll(arg, &end, 10);
  if (errno || *end || end == arg) {
    fprintf(stderr, "cocoon-guestctl: bad milliseconds %s\n", arg);
    return 2;
  }
  struct timespec now;
  clock_gettime(CLOCK_REALTIME, &now);
  long long ns = (long long)now.tv_sec * 1000000000LL + now.tv_nsec + ms * 1000000LL;
  now.tv_sec = (time_t)(ns / 1000000000LL);
  now.tv_nsec = (long)(ns % 1000000000LL);
  if (clock_settime(CLOCK_REALTIME, &now) < 0) {
    perror("cocoon-guestctl: clock_settime");
    return 1;
  }
  return 0;
}

int main(int argc, char **argv) {
  if (argc == 2 && strcmp(argv[1], "reseed") == 0) return reseed();
  if (argc == 3 && strcmp(argv[1], "shift-clock") == 0) return shift_clock(argv[2]);
  if (argc == 3 && strcmp(argv[1], "freshen") == 0) {
    int rc = reseed();
    return rc ? rc : shift_clock(argv[2]);
  }
  fprintf(stderr, "usage: cocoon-guestctl reseed | shift-clock MS | freshen MS\n");
  return 2;
}
