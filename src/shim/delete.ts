import { create, toBinary } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import { pino } from "pino";
import { DeleteResponseSchema } from "../gen/shim/github.com/containerd/containerd/runtime/v2/task/shim_pb.js";
import type { ShimFlags } from "./flags.js";
import { unmountRootfs } from "./rootfs.js";
import { existsSync } from "node:fs";
import { rm } from "node:fs/promises";
import { groupIdFor, socketPathFor } from "./group.js";
import path from "node:path";

/**
 * Written in the bundle once the shim's own Delete removed the task's sandbox and mounts: the
 * `delete` subcommand containerd runs after every shim exit then has nothing to look for.
 */
export const CLEANED_MARKER = "cocoon-cleaned";

/** A shim that was killed leaves its ttrpc socket: remove it when nothing listens there any more. */
async function removeDeadSocket(flags: ShimFlags, bundle: string): Promise<void> {
  const { annotationsOf, listening } = await import("./start.js");
  const socket = socketPathFor(
    flags.address,
    flags.namespace,
    groupIdFor(flags.id, await annotationsOf(bundle)),
  );
  if (existsSync(socket) && !(await listening(socket))) await rm(socket, { force: true });
}

/**
 * `delete`: containerd calls it after the shim went away (normally or not). Removes whatever
 * is left for the task — its sandbox (VM, virtiofsd, state) and the rootfs mounts — and
 * answers a DeleteResponse (exit 137, as Kata does: the process is gone). Logs go to stderr.
 */
export async function deleteCommand(flags: ShimFlags): Promise<Uint8Array> {
  const logger = pino({ level: flags.debug ? "debug" : "warn" }, pino.destination(2));
  const bundle = flags.bundle || process.cwd();
  try {
    // The sandbox stack (and its ~0.6 s of module loading) only when something may be left.
    if (!existsSync(path.join(bundle, CLEANED_MARKER))) {
      const { destroyLeftover } = await import("./vm.js");
      if (await destroyLeftover(flags.namespace, flags.id, logger))
        logger.warn({ id: flags.id }, "removed a sandbox a shim left behind");
    }
  } catch (err) {
    logger.error({ err }, "removing the leftover sandbox failed");
  }
  await unmountRootfs(bundle).catch((err: unknown) => logger.error({ err }, "unmounting the rootfs failed"));
  await removeDeadSocket(flags, bundle).catch((err: unknown) =>
    logger.error({ err }, "removing the dead shim's socket failed"),
  );
  return toBinary(
    DeleteResponseSchema,
    create(DeleteResponseSchema, { pid: 0, exitStatus: 137, exitedAt: timestampNow() }),
  );
}
