import path from "node:path";
import { loadConfig, type LoadedConfig } from "../config/load.js";
import { guestAssetChecks } from "../guest/image/status.js";
import { fileLogger, silentLogger, type Logger, type LogLevel } from "../log.js";
import { RuntimePaths } from "../store/paths.js";
import { Store } from "../store/store.js";
import type { HostCheck } from "../host/report.js";
import type { Io } from "./output.js";

/** Global flags every command accepts. */
export interface GlobalOptions {
  root?: string;
  config?: string;
  logLevel?: string;
  json?: boolean;
}

/** Everything a command needs, built once per invocation from the global flags. */
export interface CliContext {
  io: Io;
  json: boolean;
  loaded: LoadedConfig;
  paths: RuntimePaths;
  store: Store;
  logger: Logger;
  logFile?: string;
  /** Host checks contributed by higher layers (guest assets), shown by `cocoon check`. */
  extraChecks?: () => Promise<HostCheck[]>;
}

export async function createContext(io: Io, opts: GlobalOptions): Promise<CliContext> {
  const loaded = await loadConfig({ configPath: opts.config, root: opts.root, logLevel: opts.logLevel });
  const paths = new RuntimePaths(loaded.roots);
  const logFile = path.join(paths.logsDir, "cocoon.log");
  let logger: Logger;
  try {
    logger = fileLogger(logFile, loaded.config.runtime.log_level as LogLevel);
  } catch {
    // An unwritable state root must not stop read-only commands like `check`.
    logger = silentLogger();
  }
  return {
    io,
    json: opts.json ?? false,
    loaded,
    paths,
    store: new Store(paths),
    logger: logger.child({ cmd: process.argv.slice(2, 3).join(" ") }),
    logFile,
    extraChecks: () => guestAssetChecks(paths.assetsDir),
  };
}
