import { appendFileSync } from "node:fs";
import path from "node:path";
import { CocoonError, messageOf } from "../errors.js";
import { silentLogger } from "../log.js";
import { bool, checkContainerId, parseArgs, str } from "./flags.js";
import { DEFAULT_ROOT, OCI_VERSION, ROOT_ENV } from "./state.js";

export const RUNTIME_NAME = "cocoon-runtime";
const VERSION = "0.1.0";

const USAGE = `usage: ${RUNTIME_NAME} [--root DIR] [--log FILE] [--log-format text|json] COMMAND [flags] ID
commands: create start state kill delete exec pause resume ps list features (runc's command line)
see docs/oci-runtime.md
`;

/** One failure line for `--log`: podman parses the whole file as one JSON object and shows msg. */
export function logLine(format: string, msg: string, time = new Date()): string {
  if (format === "json") return `${JSON.stringify({ level: "error", msg, time: time.toISOString() })}\n`;
  return `time="${time.toISOString()}" level=error msg=${JSON.stringify(msg)}\n`;
}

/** cocoon-runtime's main: runc's command line. Returns the exit status. */
export async function main(argv: readonly string[], entry: string): Promise<number> {
  let logFile: string | undefined;
  let logFormat = "text";
  const fail = (err: unknown): number => {
    const msg = messageOf(err);
    process.stderr.write(logLine(logFormat, msg));
    if (logFile) {
      try {
        appendFileSync(logFile, logLine(logFormat, msg));
      } catch {
        // The log is best effort; stderr already has the message.
      }
    }
    return 1;
  };
  try {
    const parsed = parseArgs(argv.slice(2));
    logFile = str(parsed.global, "log");
    logFormat = str(parsed.global, "log-format") ?? "text";
    if (logFormat !== "text" && logFormat !== "json")
      throw new CocoonError("ERR_INVALID_ARGUMENT", `invalid log-format "${logFormat}"`);
    if (bool(parsed.global, "version")) {
      process.stdout.write(`${RUNTIME_NAME} version ${VERSION}\nspec: ${OCI_VERSION}\n`);
      return 0;
    }
    if (!parsed.command || bool(parsed.global, "help")) {
      process.stdout.write(USAGE);
      return parsed.command ? 0 : 2;
    }
    const root = path.resolve(str(parsed.global, "root") ?? (process.env[ROOT_ENV] || DEFAULT_ROOT));
    const commands = await import("./commands.js");
    const ctx = {
      root,
      logger: silentLogger(),
      entry,
      out: (t: string) => void process.stdout.write(t),
    };
    const { flags, args } = parsed;
    const id = args[0] === undefined ? "" : checkContainerId(args[0]);
    switch (parsed.command) {
      case "create":
        await commands.create(ctx, flags, id);
        return 0;
      case "start":
        await commands.start(ctx, id);
        return 0;
      case "state":
        await commands.state(ctx, id);
        return 0;
      case "kill":
        await commands.kill(ctx, flags, id, args[1] ?? "SIGTERM");
        return 0;
      case "delete":
        await commands.remove(ctx, flags, id);
        return 0;
      case "exec":
        return await commands.exec(ctx, flags, args);
      case "pause":
        await commands.pause(ctx, id);
        return 0;
      case "resume":
        await commands.resume(ctx, id);
        return 0;
      case "ps":
        await commands.ps(ctx, flags, id);
        return 0;
      case "list":
        await commands.listContainers(ctx, flags);
        return 0;
      case "features":
        commands.features(ctx);
        return 0;
      case "relay": {
        const { RELAY_ENV, relayMain, relayOptionsSchema } = await import("./relay.js");
        const options = relayOptionsSchema.parse(JSON.parse(process.env[RELAY_ENV] ?? "null"));
        return await relayMain(root, id, options);
      }
      default:
        throw new CocoonError("ERR_INVALID_ARGUMENT", `unknown command ${parsed.command}`);
    }
  } catch (err) {
    return fail(err);
  }
}
