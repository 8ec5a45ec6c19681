#!/usr/bin/env python3
# Runs a runtime's `create` the way conmon does: as a child subreaper, so the container pid the
# runtime leaves behind (written to PIDFILE) becomes our child once `create` exits, and its exit
# status is learnt only by waitpid. Appends "create <rc>" and then "exit <status>" to STATUSFILE.
#   subreaper.py STATUSFILE PIDFILE CMD [ARG...]
import ctypes, os, subprocess, sys

PR_SET_CHILD_SUBREAPER = 36
status_file, pid_file, cmd = sys.argv[1], sys.argv[2], sys.argv[3:]
if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
    sys.exit("prctl failed")

def note(line):
    with open(status_file, "a") as f:
        f.write(line + "\n")

rc = subprocess.call(cmd)
note("create %d" % rc)
if rc != 0:
    sys.exit(0)
pid = int(open(pid_file).read())
while True:
    try:
        got, status = os.waitpid(-1, 0)
    except ChildProcessError:
        note("exit lost")
        break
    if got == pid:
        code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)
        note("exit %d" % code)
        break
