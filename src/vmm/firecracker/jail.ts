import {
  chown,
  copyFile,
  link,
  lstat,
  mkdir,
  readFile,
  realpath,
  rm,
  stat,
  truncate,
  unlink,
  writeFile,
} from "node:fs/promises";
import net from "node:net";
import path from "node:path";
import { ConfigError, HypervisorError, errnoCode, messageOf } from "../../errors.js";
import { bindMount, mountsUnder, unmount } from "../../host/mount.js";
import { isProcessAlive } from "../../host/proc.js";
import { hostPathOf, type JailLayout } from "./jailer.js";

/**
 * The files of one VM's jail: `<base>/<exec>/<id>/root` and what cocoon puts into it. Firecracker
 * only sees paths inside the jail, so every resource (kernel, drives, snapshot files...) is
 * placed there: bind-mounted the way the seed does (symlinks resolved, destination created,
 * slave propagation, read-only remount where asked), hard-linked where that works, or copied.
 * Without a jailer the same layout is used and Firecracker is given host paths into it.
 */

export type JailStrategy = "auto" | "bind" | "link" | "copy";

export interface JailedResource {
  /** The path inside the jail ("/vmlinux"). */
  jailPath: string;
  /** The same file on the host. */
  hostPath: string;
  /** The file it stands for (symlinks resolved). */
  source: string;
  method: "bind" | "link" | "copy";
  readOnly: boolean;
}

export interface JailOptions {
  /** True when a jailer runs Firecracker (it then sees jail paths); false: host paths. */
  jailed: boolean;
  uid: number;
  gid: number;
  strategy: JailStrategy;
}

/** The leftover-jail probe: a live Firecracker answering on the socket or named by the pid file. */
async function socketAnswers(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = net.connect(socketPath);
    const done = (v: boolean) => {
      sock.destroy();
      resolve(v);
    };
    sock.once("connect", () => done(true));
    sock.once("error", () => done(false));
    sock.setTimeout(500, () => done(false));
  });
}

export class Jail {
  private readonly placed = new Map<string, JailedResource>();

  constructor(
    readonly layout: JailLayout,
    readonly options: JailOptions,
  ) {}

  get root(): string {
    return this.layout.root;
  }

  /** The host path of a jail path. */
  hostPath(jailPath: string): string {
    return hostPathOf(this.layout.root, jailPath);
  }

  /** The path to give Firecracker for a jail path: itself when jailed, the host path otherwise. */
  fcPath(jailPath: string): string {
    return this.options.jailed ? path.resolve("/", jailPath) : this.hostPath(jailPath);
  }

  resources(): JailedResource[] {
    return [...this.placed.values()];
  }

  /** Restores the records of a jail another process populated (persisted driver state). */
  adopt(records: readonly JailedResource[]): void {
    for (const r of records) this.placed.set(r.jailPath, { ...r });
  }

  /**
   * Makes the jail directory fresh: a leftover one (the jailer refuses an existing pid file and
   * device nodes) is removed, unless a Firecracker still runs in it, which is refused.
   */
  async prepare(probe: { socketPath?: string } = {}): Promise<void> {
    if (await exists(this.layout.jailDir)) {
      const pid = await readPidFile(this.layout.pidFile);
      const alive = pid !== undefined && (await isProcessAlive(pid));
      const answering = probe.socketPath !== undefined && (await socketAnswers(probe.socketPath));
      if (alive || answering) {
        throw new HypervisorError(
          "ERR_ALREADY_EXISTS",
          `the jail ${this.layout.jailDir} already exists and a Firecracker is running in it${alive ? ` (pid ${pid})` : ""}: stop that VM first or use another id`,
          { details: { jailDir: this.layout.jailDir, pid } },
        );
      }
      await this.cleanup();
    }
    // The directories above the root stay traversable (the jailer's create_dir_all); the root
    // itself is 0700 and the jailer gives it to the jail's uid.
    await mkdir(this.layout.jailDir, { recursive: true, mode: 0o755 });
    await mkdir(this.layout.root, { recursive: true, mode: 0o700 });
  }

  /**
   * Puts `source` into the jail at `jailPath` and returns the path Firecracker must be given.
   * "auto" hard-links when source and jail share a filesystem, else bind-mounts.
   */
  async put(
    source: string,
    jailPath: string,
    options: { readOnly?: boolean; strategy?: JailStrategy; chown?: boolean } = {},
  ): Promise<string> {
    if (!source) throw new ConfigError("ERR_ASSET_INVALID", `no source file for ${jailPath}`);
    let real: string;
    try {
      real = await realpath(source);
    } catch (err) {
      throw new ConfigError("ERR_ASSET_INVALID", `cannot put ${source} into the jail: ${messageOf(err)}`, {
        cause: err,
        details: { source },
      });
    }
    const dest = this.hostPath(jailPath);
    if (this.placed.has(path.resolve("/", jailPath)) || (await exists(dest))) await this.remove(jailPath);
    await mkdir(path.dirname(dest), { recursive: true, mode: 0o700 });
    const readOnly = options.readOnly ?? false;
    const strategy = options.strategy ?? this.options.strategy;
    let method: JailedResource["method"] | undefined;
    if (strategy === "link" || strategy === "auto") {
      try {
        await link(real, dest);
        method = "link";
      } catch (err) {
        const code = errnoCode(err);
        if (strategy === "link" || (code !== "EXDEV" && code !== "EPERM" && code !== "EMLINK")) {
          throw new HypervisorError(
            "ERR_HOST_PROBE",
            `cannot hard-link ${real} into the jail at ${dest}: ${messageOf(err)}`,
            { cause: err },
          );
        }
      }
    }
    if (!method && strategy === "copy") {
      await copyFile(real, dest);
      await chown(dest, this.options.uid, this.options.gid);
      method = "copy";
    }
    if (!method) {
      const st = await stat(real);
      if (st.isDirectory()) await mkdir(dest, { recursive: true });
      else await writeFile(dest, "", { flag: "wx", mode: 0o600 });
      try {
        await bindMount(real, dest, { readOnly });
      } catch (err) {
        await unlink(dest).catch(() => undefined);
        throw err;
      }
      method = "bind";
    }
    // Files the caller owns (FIFOs, metadata) can be handed to the jail's uid; a link shares
    // the inode, so this changes the source's owner too, which is why it is opt-in.
    if (options.chown && method !== "bind") await chown(dest, this.options.uid, this.options.gid);
    const key = path.resolve("/", jailPath);
    this.placed.set(key, { jailPath: key, hostPath: dest, source: real, method, readOnly });
    return this.fcPath(key);
  }

  /** Creates an empty file (placeholder drive, log file) owned by the jail's uid. */
  async create(jailPath: string, options: { sizeBytes?: number } = {}): Promise<string> {
    const dest = this.hostPath(jailPath);
    await mkdir(path.dirname(dest), { recursive: true, mode: 0o700 });
    await writeFile(dest, "", { mode: 0o600 });
    if (options.sizeBytes) await truncate(dest, options.sizeBytes);
    await chown(dest, this.options.uid, this.options.gid);
    return this.fcPath(jailPath);
  }

  /**
   * Whether the running Firecracker `pid` sees, at `jailPath`, the file that was put there.
   * Looked up through /proc/<pid>/root, so in Firecracker's own mount namespace and root: a
   * bind mount made after the jailer started is invisible there on a host whose mounts are
   * private, and Firecracker would open the empty placeholder instead. A chrooted Firecracker
   * has the file at `jailPath`, an unjailed one at its host path.
   */
  async seenBy(pid: number, jailPath: string): Promise<boolean> {
    const placed = this.placed.get(path.resolve("/", jailPath));
    if (!placed) return false;
    const wanted = await stat(placed.source);
    const root = `/proc/${pid}/root`;
    for (const candidate of [path.join(root, placed.jailPath), path.join(root, placed.hostPath)]) {
      try {
        const seen = await stat(candidate);
        if (seen.dev === wanted.dev && seen.ino === wanted.ino) return true;
      } catch {
        // not there in Firecracker's view
      }
    }
    return false;
  }

  /** Takes a resource out of the jail: unmounts a bind, removes the file. */
  async remove(jailPath: string): Promise<void> {
    const key = path.resolve("/", jailPath);
    const dest = this.hostPath(key);
    for (const m of await mountsUnder(dest)) await unmount(m.target, { lazy: true });
    const left = await mountsUnder(dest);
    if (left.length) {
      throw new HypervisorError("ERR_HOST_PROBE", `cannot unmount ${dest}: it stays in the jail`, {
        details: { mounts: left.map((m) => m.target) },
      });
    }
    await rm(dest, { recursive: true, force: true });
    this.placed.delete(key);
  }

  /**
   * Unmounts everything cocoon (or a crashed predecessor) mounted under the jail directory, then
   * removes it. Never removes through a mount: if one cannot be unmounted, it stops with an
   * error instead of deleting the files behind it. Safe to run twice.
   */
  async cleanup(): Promise<void> {
    const dir = this.layout.jailDir;
    for (const m of await mountsUnder(dir)) {
      await unmount(m.target, { lazy: true }).catch(() => undefined);
    }
    const left = await mountsUnder(dir);
    if (left.length) {
      throw new HypervisorError(
        "ERR_HOST_PROBE",
        `cannot unmount ${left.map((m) => m.target).join(", ")}: the jail ${dir} was left in place`,
        {
          details: { mounts: left.map((m) => m.target) },
        },
      );
    }
    await rm(dir, { recursive: true, force: true });
    this.placed.clear();
  }
}

async function exists(p: string): Promise<boolean> {
  try {
    await lstat(p);
    return true;
  } catch {
    return false;
  }
}

/** The pid in a jailer pid file (decimal, no newline); undefined when absent or not a number. */
export async function readPidFile(file: string): Promise<number | undefined> {
  try {
    const text = (await readFile(file, "utf8")).trim();
    return /^\d+$/.test(text) ? Number(text) : undefined;
  } catch {
    return undefined;
  }
}
