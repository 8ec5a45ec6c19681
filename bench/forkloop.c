/*
 * Bench baseline (issue 14): the in-guest cost of fork + exec + wait of a program, with no
 * agent in the way. Usage: forkloop N PROGRAM; prints the mean microseconds per iteration.
 * The data-path bench builds it statically on the host and copies it into the guest's /tmp.
 */
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: forkloop N PROGRAM\n");
    return 2;
  }
  int n = atoi(argv[1]);
  struct timespec a, b;
  clock_gettime(CLOCK_MONOTONIC, &a);
  for (int i = 0; i < n; i++) {
    pid_t pid = fork();
    if (pid < 0) return 1;
    if (pid == 0) {
      execl(argv[2], argv[2], (char *)NULL);
      _exit(127);
    }
    int status;
    if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) return 1;
  }
  clock_gettime(CLOCK_MONOTONIC, &b);
  double us = ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / 1e3 / n;
  printf("%.1f\n", us);
  return 0;
}
