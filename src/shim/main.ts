import { create, toBinary } from "@bufbuild/protobuf";

import { RuntimeInfoSchema } from "../gen/shim/runtime_info_pb.js";
import { parseFlags } from "./flags.js";

// Each subcommand loads only its own modules: containerd runs `start` and `delete` as separate
// processes on every task, and loading the sandbox stack there cost ~0.6 s each time.

export const SHIM_NAME = "containerd-shim-cocoon-v1";
export const RUNTIME_NAME = "io.containerd.cocoon.v1";
const VERSION = "0.1.0";

/** The shim binary: `start`, `delete`, `-v`, `-info`, and the internal `serve`. */
export async function main(argv: readonly string[], entry: string): Promise<number> {
  let flags;
  try {
    flags = parseFlags(argv.slice(2));
  } catch (err) {
    process.stderr.write(`${SHIM_NAME}: ${(err as Error).message}\n`);
    return 2;
  }
  if (flags.version) {
    process.stdout.write(`${SHIM_NAME}:\n  Version: ${VERSION}\n  Runtime: ${RUNTIME_NAME}\n`);
    return 0;
  }
  if (flags.info) {
    const info = create(RuntimeInfoSchema, { name: RUNTIME_NAME, version: { version: VERSION } });
    process.stdout.write(toBinary(RuntimeInfoSchema, info));
    return 0;
  }
  try {
    switch (flags.command) {
      case "start":
        if (!flags.id || !flags.namespace) throw new Error("start needs -id and -namespace");
        process.stdout.write(await (await import("./start.js")).startCommand(flags, entry));
        return 0;
      case "delete":
        if (!flags.id) throw new Error("delete needs -id");
        process.stdout.write(await (await import("./delete.js")).deleteCommand(flags));
        return 0;
      case "serve":
        if (!flags.socket) throw new Error("serve is started by `start`");
        await (await import("./serve.js")).serveCommand(flags);
        return -1; // keep running
      default:
        process.stderr.write(
          `usage: ${SHIM_NAME} -namespace NS -address ADDR -id ID [-bundle DIR] [-debug] start|delete\n` +
            `       ${SHIM_NAME} -v | -info\n` +
            `containerd runs this binary for runtime ${RUNTIME_NAME}; see docs/shim.md.\n`,
        );
        return 2;
    }
  } catch (err) {
    process.stderr.write(`${SHIM_NAME}: ${(err as Error).message}\n`);
    return 1;
  }
}
