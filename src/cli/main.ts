import { Command, CommanderError, Option } from "commander";
import { ExitCode } from "../errors.js";
import { COCOON_VERSION } from "../package-root.js";
import { registerCheck } from "./commands/check.js";
import { registerConfig } from "./commands/config.js";
import { registerFactory } from "./commands/factory.js";
import { registerSnapshot } from "./commands/snapshot.js";
import { registerImage } from "./commands/image.js";
import { registerResourceCommands, registerStatsCommand } from "./commands/resources.js";
import { registerLifecycleCommands } from "./commands/lifecycle.js";
import { registerSandboxCommands } from "./commands/sandbox.js";
import { registerNetworkCommands } from "./commands/network.js";
import { createContext, type CliContext, type GlobalOptions } from "./context.js";
import { processIo, reportError, type Io } from "./output.js";

export type Runner = (fn: (ctx: CliContext) => Promise<number>) => Promise<void>;

/** Builds the `cocoon` program. `io` and `exit` are injectable for tests. */
export function buildProgram(
  io: Io = processIo,
  setExit: (code: number) => void = (c) => (process.exitCode = c),
): Command {
  const program = withGlobalOptions(new Command());
  program
    .name("cocoon")
    .description("run workloads inside lightweight virtual machines (QEMU, Firecracker, ACRN)")
    .version(COCOON_VERSION, "-v, --version", "print cocoon's version")
    .enablePositionalOptions()
    .showHelpAfterError("(run with --help for usage)")
    .configureOutput({ writeOut: (s) => io.out(s.trimEnd()), writeErr: (s) => io.err(s.trimEnd()) })
    .exitOverride();

  // Global options are accepted before or after the subcommand (`cocoon ps --json`): each
  // subcommand gets them too, and the action sees them merged.
  let actionOpts: GlobalOptions = {};
  program.hook("preAction", (_root, action) => {
    actionOpts = action.optsWithGlobals<GlobalOptions>();
  });
  const run: Runner = async (fn) => {
    const opts = actionOpts;
    let ctx: CliContext | undefined;
    try {
      ctx = await createContext(io, opts);
      setExit(await fn(ctx));
    } catch (err) {
      ctx?.logger.error({ err }, "command failed");
      setExit(reportError(io, err, { json: opts.json, logFile: ctx?.logFile }));
    }
  };

  registerCheck(program, run);
  registerConfig(program, run);
  registerImage(program, run);
  registerSandboxCommands(program, run);
  registerResourceCommands(program, run);
  registerStatsCommand(program, run);
  registerFactory(program, run);
  registerSnapshot(program, run);
  registerLifecycleCommands(program, run);
  registerNetworkCommands(program, run);
  addGlobalOptions(program);
  return program;
}

/** The options every command takes, before or after its name. */
function withGlobalOptions(cmd: Command): Command {
  return cmd
    .option("--root <dir>", "keep all state under <dir> (env COCOON_ROOT)")
    .option("--config <file>", "configuration file (env COCOON_CONFIG; default /etc/cocoon/config.toml)")
    .addOption(
      new Option("--log-level <level>", "log level for the log file").choices([
        "trace",
        "debug",
        "info",
        "warn",
        "error",
        "fatal",
        "silent",
      ]),
    )
    .option("--json", "machine-readable output");
}

function addGlobalOptions(parent: Command): void {
  for (const cmd of parent.commands) {
    if (cmd.commands.length) addGlobalOptions(cmd);
    else withGlobalOptions(cmd);
  }
}

/** Entry point of bin/cocoon.js. */
export async function main(argv: string[] = process.argv, io: Io = processIo): Promise<void> {
  const program = buildProgram(io);
  try {
    await program.parseAsync(argv);
  } catch (err) {
    if (err instanceof CommanderError) {
      // --help and --version end here with code 0; usage errors were already printed.
      process.exitCode = err.exitCode === 0 ? 0 : ExitCode.usage;
      return;
    }
    process.exitCode = reportError(io, err);
  }
}
