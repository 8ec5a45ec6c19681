import { randomBytes } from "node:crypto";
import { mkdir, open, readFile, rename, rm } from "node:fs/promises";
import path from "node:path";
import { z } from "zod";
import { StoreError, errnoCode, messageOf } from "../errors.js";

/**
 * Every state file is an envelope: which schema and version the data follows, and a
 * revision that grows by one on every write (so a writer can detect a lost update).
 */
const envelopeSchema = z.object({
  schema: z.string(),
  version: z.number().int().positive(),
  revision: z.number().int().nonnegative(),
  updatedAt: z.string(),
  data: z.unknown(),
});

export interface StoredDocument<T> {
  data: T;
  revision: number;
  version: number;
}

export interface DocumentKind<T> {
  /** e.g. "cocoon.sandbox". */
  schema: string;
  /** The newest version this code writes and reads. */
  version: number;
  data: z.ZodType<T>;
  /** Upgrades older versions' data to the current shape. */
  migrate?: (version: number, data: unknown) => unknown;
}

function corrupt(file: string, why: string, cause?: unknown): StoreError {
  return new StoreError(
    "ERR_STATE_CORRUPT",
    `state file ${file} is corrupt (${why}); it was left untouched`,
    {
      cause,
      details: { file },
      hint: `inspect it, then remove it by hand (or use --force where a command offers it)`,
    },
  );
}

/** Reads and validates a document; undefined when the file does not exist. */
export async function readDocument<T>(
  file: string,
  kind: DocumentKind<T>,
): Promise<StoredDocument<T> | undefined> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (err) {
    if (errnoCode(err) === "ENOENT") return undefined;
    throw new StoreError("ERR_STATE_IO", `cannot read ${file}: ${messageOf(err)}`, {
      cause: err,
      details: { file },
    });
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw corrupt(file, text.length === 0 ? "empty file" : `not valid JSON: ${messageOf(err)}`, err);
  }
  const env = envelopeSchema.safeParse(raw);
  if (!env.success) throw corrupt(file, "missing or malformed envelope");
  if (env.data.schema !== kind.schema)
    throw corrupt(file, `holds "${env.data.schema}", expected "${kind.schema}"`);
  if (env.data.version > kind.version) {
    throw new StoreError(
      "ERR_STATE_VERSION",
      `state file ${file} has version ${env.data.version}, newer than this cocoon understands (${kind.version})`,
      { details: { file, version: env.data.version } },
    );
  }
  const upgraded =
    env.data.version < kind.version && kind.migrate
      ? kind.migrate(env.data.version, env.data.data)
      : env.data.data;
  const parsed = kind.data.safeParse(upgraded);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw corrupt(file, `invalid data at ${issue?.path.join(".") || "<root>"}: ${issue?.message ?? "?"}`);
  }
  return { data: parsed.data, revision: env.data.revision, version: kind.version };
}

/**
 * Writes a document atomically: temp file in the same directory, fsync, rename, fsync of the
 * directory. A corrupt existing file is never replaced (the caller must remove it on purpose),
 * and `expectedRevision` turns a concurrent write into an error instead of a lost update.
 */
export async function writeDocument<T>(
  file: string,
  kind: DocumentKind<T>,
  data: T,
  options: { expectedRevision?: number } = {},
): Promise<number> {
  const current = await readDocument(file, kind); // throws on a corrupt file: never overwrite one
  if (options.expectedRevision !== undefined && (current?.revision ?? 0) !== options.expectedRevision) {
    throw new StoreError(
      "ERR_STATE_IO",
      `state file ${file} changed underneath (revision ${current?.revision ?? 0}, expected ${options.expectedRevision})`,
      { details: { file } },
    );
  }
  const checked = kind.data.parse(data);
  const revision = (current?.revision ?? 0) + 1;
  const body = JSON.stringify(
    {
      schema: kind.schema,
      version: kind.version,
      revision,
      updatedAt: new Date().toISOString(),
      data: checked,
    },
    null,
    2,
  );
  const dir = path.dirname(file);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const tmp = path.join(dir, `.${path.basename(file)}.${randomBytes(6).toString("hex")}.tmp`);
  try {
    const fh = await open(tmp, "wx", 0o600);
    try {
      await fh.writeFile(body + "\n");
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, file);
  } catch (err) {
    await rm(tmp, { force: true });
    throw new StoreError("ERR_STATE_IO", `cannot write ${file}: ${messageOf(err)}`, {
      cause: err,
      details: { file },
    });
  }
  await fsyncDir(dir);
  return revision;
}

async function fsyncDir(dir: string): Promise<void> {
  try {
    const fh = await open(dir, "r");
    try {
      await fh.sync();
    } finally {
      await fh.close();
    }
  } catch {
    // Some filesystems refuse fsync on directories; the rename is still atomic.
  }
}
