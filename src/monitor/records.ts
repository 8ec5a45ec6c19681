import { randomBytes } from "node:crypto";
import { readFile, rename, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import type { z } from "zod";
import { errnoCode } from "../errors.js";
import {
  MONITOR_FILES,
  mainExitSchema,
  monitorRecordSchema,
  vmmExitSchema,
  watchMainSchema,
  type MainExit,
  type MonitorRecord,
  type VmmExit,
} from "./spec.js";

/** `<vmDir>/monitor`: where a monitor keeps what it knows. */
export function monitorDir(vmDir: string): string {
  return path.join(vmDir, MONITOR_FILES.dir);
}

/**
 * Writes a small JSON record atomically (temp file + rename). It never creates directories:
 * a record for a VM whose directory was removed (the sandbox was deleted) is simply dropped.
 */
export async function writeRecord(vmDir: string, name: string, value: unknown): Promise<boolean> {
  const file = path.join(monitorDir(vmDir), name);
  const tmp = `${file}.${randomBytes(4).toString("hex")}.tmp`;
  try {
    await writeFile(tmp, JSON.stringify(value) + "\n", { flag: "wx" });
    await rename(tmp, file);
    return true;
  } catch (err) {
    await rm(tmp, { force: true }).catch(() => undefined);
    if (errnoCode(err) === "ENOENT") return false;
    throw err;
  }
}

async function readRecord<T>(vmDir: string, name: string, schema: z.ZodType<T>): Promise<T | undefined> {
  let text: string;
  try {
    text = await readFile(path.join(monitorDir(vmDir), name), "utf8");
  } catch {
    return undefined;
  }
  try {
    const parsed = schema.safeParse(JSON.parse(text));
    return parsed.success ? parsed.data : undefined;
  } catch {
    return undefined; // a torn or foreign file tells us nothing
  }
}

/** Everything a monitor recorded about a VM (each part undefined when not (yet) known). */
export interface MonitorRecords {
  record?: MonitorRecord;
  vmmExit?: VmmExit;
  mainExit?: MainExit;
}

export async function readMonitorRecords(vmDir: string): Promise<MonitorRecords> {
  const [record, vmmExit, mainExit] = await Promise.all([
    readRecord(vmDir, MONITOR_FILES.record, monitorRecordSchema),
    readRecord(vmDir, MONITOR_FILES.vmmExit, vmmExitSchema),
    readRecord(vmDir, MONITOR_FILES.mainExit, mainExitSchema),
  ]);
  return {
    ...(record ? { record } : {}),
    ...(vmmExit ? { vmmExit } : {}),
    ...(mainExit ? { mainExit } : {}),
  };
}

/** Tells the VM's monitor which process is the sandbox's main one (it stops the VM when that ends). */
export async function watchMainProcess(vmDir: string, execId: string, graceMs = 0): Promise<void> {
  await writeRecord(vmDir, MONITOR_FILES.watchMain, { execId, graceMs });
}

export async function readWatchMain(vmDir: string): Promise<{ execId: string; graceMs: number } | undefined> {
  return readRecord(vmDir, MONITOR_FILES.watchMain, watchMainSchema);
}
