import path from "node:path";
import { ConfigError } from "../errors.js";

/** Where cocoon keeps things. State is volatile (tmpfs in production); lib is persistent. */
export interface RuntimeRoots {
  /** Sandbox state, locks, VM sockets. Default /run/cocoon. */
  stateRoot: string;
  /** Persistent data: jails (must allow exec). Default /var/lib/cocoon. */
  libRoot: string;
  /** Guest kernels and images, keyed by content hash. Default <libRoot>/assets. */
  assetsDir: string;
}

export const DEFAULT_STATE_ROOT = "/run/cocoon";
export const DEFAULT_LIB_ROOT = "/var/lib/cocoon";

/** `--root R` / COCOON_ROOT=R puts everything below R: R/run for state, R/lib for data. */
export function rootsFromBase(base: string): Pick<RuntimeRoots, "stateRoot" | "libRoot"> {
  const abs = path.resolve(base);
  return { stateRoot: path.join(abs, "run"), libRoot: path.join(abs, "lib") };
}

const ID_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;

/** Ids become path components and VM names: keep them short and free of separators. */
export function checkId(kind: string, id: string): string {
  if (!ID_RE.test(id)) {
    throw new ConfigError(
      "ERR_INVALID_ARGUMENT",
      id === ""
        ? `${kind} id is empty`
        : `invalid ${kind} id "${id}": use 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit`,
      { details: { kind, id } },
    );
  }
  return id;
}

/** Paths derived from the roots. One place, so every layer agrees on the layout. */
export class RuntimePaths {
  constructor(readonly roots: RuntimeRoots) {}

  get stateRoot(): string {
    return this.roots.stateRoot;
  }
  get libRoot(): string {
    return this.roots.libRoot;
  }
  get assetsDir(): string {
    return this.roots.assetsDir;
  }
  /** `<state>/sbs/<id>/`: persisted sandbox state. */
  sandboxDir(id: string): string {
    return path.join(this.stateRoot, "sbs", checkId("sandbox", id));
  }
  get sandboxesDir(): string {
    return path.join(this.stateRoot, "sbs");
  }
  /** `<state>/vm/<id>/`: VMM sockets, pid file, console log. */
  vmDir(id: string): string {
    return path.join(this.stateRoot, "vm", checkId("sandbox", id));
  }
  /** `<state>/global/`: state shared by all sandboxes (e.g. ACRN's UUID pool). */
  get globalDir(): string {
    return path.join(this.stateRoot, "global");
  }
  get locksDir(): string {
    return path.join(this.stateRoot, "locks");
  }
  get logsDir(): string {
    return path.join(this.stateRoot, "logs");
  }
  /** `<lib>/<exec>/`: the jailer's chroot base for one VMM binary name. */
  get jailerBase(): string {
    return path.join(this.libRoot, "jails");
  }
  /** `<state>/shared/<id>/`: host side of the sandbox's shared filesystem. */
  sharedDir(id: string): string {
    return path.join(this.stateRoot, "shared", checkId("sandbox", id));
  }
}
