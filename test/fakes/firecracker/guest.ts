/**
 * What stands in for the guest and the devices inside the fake Firecracker:
 * - vCPU threads: one worker thread per vCPU, named `fc_vcpu N` like Firecracker's (so thread
 *   lookup and pinning by name work against the fake);
 * - the hybrid-vsock backend: Firecracker binds `uds_path` when the device is configured; a
 *   host connection sends `CONNECT <port>\n` and gets `OK <host port>\n` when a guest program
 *   listens on that port, after which the fake guest ECHOES every byte back. The fake guest
 *   listens on every port (or only on FAKE_FC_GUEST_VSOCK_PORTS, comma separated); on any
 *   other port, or while the VM is not running, the connection is closed, as Firecracker does
 *   when nothing listens in the guest. At boot the fake guest also dials the host on each port
 *   of FAKE_FC_GUEST_DIAL (guest-initiated connections go to `<uds_path>_<port>`), writes
 *   `hello from cid <cid> port <port>\n` and then echoes.
 * - the serial console: when the boot args contain console=ttyS0, a few boot lines go to
 *   stdout (or to PUT /serial's serial_out_path).
 */
import { appendFileSync, existsSync, writeFileSync } from "node:fs";
import net from "node:net";
import { Worker } from "node:worker_threads";

/** Renames the calling thread (Linux allows a process to name its own threads). */
export function nameThread(name: string): void {
  try {
    writeFileSync("/proc/thread-self/comm", name.slice(0, 15));
  } catch {
    // not Linux, or /proc unavailable: names are cosmetic
  }
}

const VCPU_SOURCE = `
const { parentPort, workerData } = require("node:worker_threads");
const fs = require("node:fs");
try { fs.writeFileSync("/proc/thread-self/comm", "fc_vcpu " + workerData.index); } catch {}
parentPort.postMessage("up");
parentPort.on("message", () => {});
`;

/** The vCPU threads of a running VM. */
export class VcpuThreads {
  private workers: Worker[] = [];

  async start(count: number): Promise<void> {
    await Promise.all(
      Array.from({ length: count }, (_, index) => {
        const w = new Worker(VCPU_SOURCE, { eval: true, workerData: { index } });
        this.workers.push(w);
        return new Promise<void>((resolve, reject) => {
          w.once("message", () => resolve());
          w.once("error", reject);
        });
      }),
    );
  }

  async stop(): Promise<void> {
    const ws = this.workers;
    this.workers = [];
    await Promise.all(ws.map((w) => w.terminate()));
  }
}

export interface GuestBehaviour {
  /** Ports a guest program listens on; undefined = every port. */
  listenPorts?: Set<number>;
  /** Ports the guest dials on the host at boot. */
  dialPorts: number[];
  /** Whether the guest has a balloon driver (PATCH /balloon fails without one). */
  balloonDriver: boolean;
  /** Whether the guest reacts to Ctrl-Alt-Del by resetting (Firecracker then exits 0). */
  ctrlAltDel: boolean;
}

export function guestBehaviourFromEnv(env: NodeJS.ProcessEnv): GuestBehaviour {
  const ports = (s: string | undefined) =>
    (s ?? "")
      .split(",")
      .map((x) => x.trim())
      .filter(Boolean)
      .map(Number)
      .filter((n) => Number.isInteger(n) && n >= 0);
  return {
    ...(env.FAKE_FC_GUEST_VSOCK_PORTS ? { listenPorts: new Set(ports(env.FAKE_FC_GUEST_VSOCK_PORTS)) } : {}),
    dialPorts: ports(env.FAKE_FC_GUEST_DIAL),
    balloonDriver: env.FAKE_FC_GUEST_BALLOON !== "0",
    ctrlAltDel: env.FAKE_FC_GUEST_CAD !== "0",
  };
}

/** Host ports Firecracker assigns to host-initiated connections: round robin in [2^30, 2^31). */
let nextHostPort = 1 << 30;

/** The vsock device's host side. */
export class VsockBackend {
  private server: net.Server | undefined;
  private readonly conns = new Set<net.Socket>();

  constructor(
    readonly hostPath: string,
    readonly cid: number,
    private readonly guest: GuestBehaviour,
    private readonly running: () => boolean,
    private readonly onBytes: (rx: number, tx: number) => void,
  ) {}

  /** Binds `uds_path`; fails like Firecracker when the path exists. */
  async listen(): Promise<void> {
    if (existsSync(this.hostPath)) {
      throw new Error(
        `Cannot create backend for vsock device: UnixBind(Os { code: 98, kind: AddrInUse, message: "Address in use" })`,
      );
    }
    const server = net.createServer((sock) => this.accept(sock));
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(this.hostPath, () => resolve());
    });
    server.on("error", () => undefined);
    this.server = server;
  }

  private track(sock: net.Socket): void {
    this.conns.add(sock);
    sock.on("close", () => this.conns.delete(sock));
    sock.on("error", () => undefined);
  }

  private listens(port: number): boolean {
    return this.guest.listenPorts === undefined || this.guest.listenPorts.has(port);
  }

  private accept(sock: net.Socket): void {
    this.track(sock);
    let head = "";
    const onData = (chunk: Buffer) => {
      head += chunk.toString("latin1");
      const nl = head.indexOf("\n");
      if (nl === -1) {
        if (head.length > 64) sock.destroy();
        return;
      }
      sock.off("data", onData);
      const m = /^CONNECT (\d+)$/.exec(head.slice(0, nl));
      const port = m ? Number(m[1]) : NaN;
      if (!m || port > 0xffffffff || !this.running() || !this.listens(port)) {
        sock.destroy();
        return;
      }
      const hostPort = nextHostPort;
      nextHostPort = nextHostPort + 1 >= 2 ** 31 ? 1 << 30 : nextHostPort + 1;
      sock.write(`OK ${hostPort}\n`);
      const rest = Buffer.from(head.slice(nl + 1), "latin1");
      this.echo(sock, rest);
    };
    sock.on("data", onData);
  }

  private echo(sock: net.Socket, first?: Buffer): void {
    const pass = (chunk: Buffer) => {
      this.onBytes(chunk.length, chunk.length);
      sock.write(chunk);
    };
    if (first && first.length) pass(first);
    sock.on("data", pass);
  }

  /** Guest-initiated connections to `<uds_path>_<port>`; a missing listener means RST for the guest. */
  dialHost(): void {
    for (const port of this.guest.dialPorts) {
      const sock = net.connect(`${this.hostPath}_${port}`);
      this.track(sock);
      sock.once("connect", () => {
        sock.write(`hello from cid ${this.cid} port ${port}\n`);
        this.echo(sock);
      });
    }
  }

  /** A snapshot resets every connection (VIRTIO_VSOCK_EVENT_TRANSPORT_RESET). */
  resetConnections(): void {
    for (const c of this.conns) c.destroy();
    this.conns.clear();
  }

  async close(): Promise<void> {
    this.resetConnections();
    const s = this.server;
    this.server = undefined;
    if (s) await new Promise<void>((resolve) => s.close(() => resolve()));
  }
}

/** Where the guest's serial console goes: Firecracker's stdout, or PUT /serial's file (1.14+). */
export class SerialConsole {
  private outPath: string | undefined;

  setOutput(path: string): void {
    this.outPath = path;
  }

  write(text: string): void {
    if (this.outPath) appendFileSync(this.outPath, text);
    else process.stdout.write(text);
  }
}
