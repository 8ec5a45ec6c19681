#!/usr/bin/env python3
# A console-socket receiver for tests, as conmon is one: listens on SOCKET, receives one message
# (the pty name, with the pty master fd as SCM_RIGHTS), prints "name=<name>" on stderr, sets the
# window to ROWSxCOLS, writes INPUT into the terminal, then copies everything the terminal shows
# to stdout until its other side is closed. Python because Node cannot receive a file descriptor.
import os, socket, struct, sys, fcntl, termios

path, rows, cols, text = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
srv.bind(path)
srv.listen(1)
print("listening", file=sys.stderr, flush=True)
conn, _ = srv.accept()
msg, fds, _flags, _addr = socket.recv_fds(conn, 4096, 1)
conn.close()
srv.close()
os.unlink(path)
if len(fds) != 1:
    sys.exit("no fd received")
master = fds[0]
print("name=" + msg.decode(), file=sys.stderr, flush=True)
fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
os.write(master, text.encode())
while True:
    try:
        data = os.read(master, 4096)
    except OSError:  # EIO: every slave fd is closed
        break
    if not data:
        break
    os.write(1, data)
