import { readdir, rm } from "node:fs/promises";
import path from "node:path";
import { SandboxError, errnoCode } from "../errors.js";
import { readDocument, writeDocument, type DocumentKind, type StoredDocument } from "./atomic.js";
import { withLock, type LockOptions } from "./lock.js";
import { checkId, type RuntimePaths } from "./paths.js";

/**
 * Persisted state under the state root: one directory per sandbox holding its documents, and
 * a global area for state shared between sandboxes. Locks live in their own directory so a
 * sandbox directory can be removed while its lock is held.
 */
export class Store {
  constructor(readonly paths: RuntimePaths) {}

  private sandboxFile(id: string, name: string): string {
    return path.join(this.paths.sandboxDir(id), `${name}.json`);
  }

  /** Runs `fn` holding the sandbox's lock: one cocoon process acts on a sandbox at a time. */
  withSandboxLock<T>(id: string, fn: () => Promise<T>, options?: LockOptions): Promise<T> {
    return withLock(path.join(this.paths.locksDir, `sbs-${checkId("sandbox", id)}.lock`), fn, options);
  }

  /** Runs `fn` holding a named global lock (e.g. "acrn-uuids"). */
  withGlobalLock<T>(name: string, fn: () => Promise<T>, options?: LockOptions): Promise<T> {
    return withLock(path.join(this.paths.locksDir, `global-${checkId("lock", name)}.lock`), fn, options);
  }

  async readSandbox<T>(
    id: string,
    name: string,
    kind: DocumentKind<T>,
  ): Promise<StoredDocument<T> | undefined> {
    return readDocument(this.sandboxFile(id, name), kind);
  }

  async writeSandbox<T>(id: string, name: string, kind: DocumentKind<T>, data: T): Promise<number> {
    return writeDocument(this.sandboxFile(id, name), kind, data);
  }

  async readGlobal<T>(name: string, kind: DocumentKind<T>): Promise<StoredDocument<T> | undefined> {
    return readDocument(path.join(this.paths.globalDir, `${checkId("document", name)}.json`), kind);
  }

  async writeGlobal<T>(name: string, kind: DocumentKind<T>, data: T): Promise<number> {
    return writeDocument(path.join(this.paths.globalDir, `${checkId("document", name)}.json`), kind, data);
  }

  /** Ids of all sandboxes with a state directory. */
  async listSandboxes(): Promise<string[]> {
    try {
      const entries = await readdir(this.paths.sandboxesDir, { withFileTypes: true });
      return entries
        .filter((e) => e.isDirectory())
        .map((e) => e.name)
        .sort();
    } catch (err) {
      if (errnoCode(err) === "ENOENT") return [];
      throw err;
    }
  }

  async sandboxExists(id: string): Promise<boolean> {
    return (await this.listSandboxes()).includes(checkId("sandbox", id));
  }

  /** Removes a sandbox's state directory (idempotent). */
  async removeSandbox(id: string): Promise<void> {
    await rm(this.paths.sandboxDir(id), { recursive: true, force: true });
  }

  notFound(id: string): SandboxError {
    return new SandboxError("ERR_NOT_FOUND", `no sandbox "${id}"`, { details: { sandbox: id } });
  }
}
