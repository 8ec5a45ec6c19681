import { TtrpcError, Code } from "./ttrpc/status.js";

/** The flags containerd passes a runtime-v2 shim (Go `flag` syntax: -name value, -name=value). */
export interface ShimFlags {
  namespace: string;
  address: string;
  publishBinary: string;
  id: string;
  bundle: string;
  debug: boolean;
  /** Internal: the socket the long-lived server listens on (set by `start` for `serve`). */
  socket: string;
  version: boolean;
  info: boolean;
  command: string | undefined;
}

const STRING_FLAGS: Record<string, keyof ShimFlags> = {
  namespace: "namespace",
  address: "address",
  "publish-binary": "publishBinary",
  id: "id",
  bundle: "bundle",
  socket: "socket",
};
const BOOL_FLAGS: Record<string, keyof ShimFlags> = { debug: "debug", v: "version", info: "info" };

export function parseFlags(argv: readonly string[]): ShimFlags {
  const flags: ShimFlags = {
    namespace: "",
    address: "",
    publishBinary: "",
    id: "",
    bundle: "",
    debug: false,
    socket: "",
    version: false,
    info: false,
    command: undefined,
  };
  const rec = flags as unknown as Record<string, string | boolean | undefined>;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (!arg.startsWith("-") || arg === "-") {
      if (flags.command !== undefined)
        throw new TtrpcError(Code.invalidArgument, `unexpected argument ${arg}`);
      flags.command = arg;
      continue;
    }
    const body = arg.replace(/^--?/, "");
    const eq = body.indexOf("=");
    const name = eq >= 0 ? body.slice(0, eq) : body;
    if (BOOL_FLAGS[name]) {
      rec[BOOL_FLAGS[name]] = eq >= 0 ? body.slice(eq + 1) !== "false" : true;
    } else if (STRING_FLAGS[name]) {
      const value = eq >= 0 ? body.slice(eq + 1) : argv[++i];
      if (value === undefined) throw new TtrpcError(Code.invalidArgument, `flag -${name} needs a value`);
      rec[STRING_FLAGS[name]] = value;
    } else {
      // Newer containerd versions may add flags: ignore unknown ones like Go shims' compat layer does not,
      // but refusing would make the runtime unusable — so skip it (and its value if it has one).
      if (eq < 0 && argv[i + 1] !== undefined && !argv[i + 1]!.startsWith("-") && !isCommand(argv[i + 1]!))
        i++;
    }
  }
  return flags;
}

function isCommand(s: string): boolean {
  return s === "start" || s === "delete" || s === "serve";
}
