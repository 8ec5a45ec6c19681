import { CocoonError } from "../errors.js";

/**
 * runc's command line, as its callers (conmon, podman, containerd's runc shim, runtime-tools)
 * produce it: global flags, a command, the command's flags, then positional arguments. Flags
 * come as `-flag` or `--flag`, with their value as the next argument or after `=`.
 */

/** Where a flag is accepted and whether it takes a value. */
interface FlagDef {
  name: string;
  aliases?: string[];
  value: boolean;
  /** May be given several times (its values are collected). */
  repeat?: boolean;
}

const GLOBAL_FLAGS: FlagDef[] = [
  { name: "root", value: true },
  { name: "log", value: true },
  { name: "log-format", value: true },
  { name: "systemd-cgroup", value: false },
  { name: "debug", value: false },
  { name: "rootless", value: true },
  { name: "criu", value: true },
  { name: "version", aliases: ["v"], value: false },
  { name: "help", aliases: ["h"], value: false },
];

const COMMAND_FLAGS: Record<string, FlagDef[]> = {
  create: [
    { name: "bundle", aliases: ["b"], value: true },
    { name: "console-socket", value: true },
    { name: "pidfd-socket", value: true },
    { name: "pid-file", value: true },
    { name: "no-pivot", value: false },
    { name: "no-new-keyring", value: false },
    { name: "preserve-fds", value: true },
    { name: "detach", aliases: ["d"], value: false },
  ],
  start: [],
  state: [],
  kill: [{ name: "all", aliases: ["a"], value: false }],
  delete: [{ name: "force", aliases: ["f"], value: false }],
  exec: [
    { name: "process", aliases: ["p"], value: true },
    { name: "detach", aliases: ["d"], value: false },
    { name: "pid-file", value: true },
    { name: "tty", aliases: ["t"], value: false },
    { name: "console-socket", value: true },
    { name: "pidfd-socket", value: true },
    { name: "cwd", value: true },
    { name: "env", aliases: ["e"], value: true, repeat: true },
    { name: "user", aliases: ["u"], value: true },
    { name: "additional-gids", aliases: ["g"], value: true, repeat: true },
    { name: "process-label", value: true },
    { name: "apparmor", value: true },
    { name: "no-new-privs", value: false },
    { name: "cap", aliases: ["c"], value: true, repeat: true },
    { name: "preserve-fds", value: true },
    { name: "ignore-paused", value: false },
  ],
  pause: [],
  resume: [],
  ps: [{ name: "format", aliases: ["f"], value: true }],
  list: [
    { name: "format", aliases: ["f"], value: true },
    { name: "quiet", aliases: ["q"], value: false },
  ],
  features: [],
  // Internal: the per-container relay process that `create` and `exec --detach` start.
  relay: [],
};

/** Arguments after the command: how many each command takes (min, max; -1 = any). */
const POSITIONALS: Record<string, [number, number]> = {
  create: [1, 1],
  start: [1, 1],
  state: [1, 1],
  kill: [1, 2],
  delete: [1, 1],
  exec: [1, -1],
  pause: [1, 1],
  resume: [1, 1],
  ps: [1, -1],
  list: [0, 0],
  features: [0, 0],
  relay: [1, 1],
};

export type FlagValues = Record<string, string | boolean | string[]>;

export interface ParsedArgs {
  global: FlagValues;
  command: string | undefined;
  flags: FlagValues;
  args: string[];
}

function usage(message: string): CocoonError {
  return new CocoonError("ERR_INVALID_ARGUMENT", message);
}

/** Parses flags from `argv[i]` on until a non-flag; returns the index of the first non-flag. */
function parseFlagRun(argv: readonly string[], start: number, defs: FlagDef[], out: FlagValues): number {
  let i = start;
  while (i < argv.length) {
    const arg = argv[i]!;
    if (arg === "--") return i + 1;
    if (!arg.startsWith("-") || arg === "-") return i;
    const body = arg.replace(/^--?/, "");
    const eq = body.indexOf("=");
    const name = eq === -1 ? body : body.slice(0, eq);
    const def = defs.find((d) => d.name === name || d.aliases?.includes(name));
    if (!def) throw usage(`flag provided but not defined: -${name}`);
    let value: string | boolean;
    if (def.value) {
      if (eq !== -1) value = body.slice(eq + 1);
      else {
        const next = argv[i + 1];
        if (next === undefined) throw usage(`flag needs an argument: -${name}`);
        value = next;
        i++;
      }
    } else {
      // Boolean flags accept an explicit value (`--detach=false`), as Go's flag package does.
      const explicit = eq === -1 ? "true" : body.slice(eq + 1);
      if (explicit !== "true" && explicit !== "false")
        throw usage(`invalid boolean value "${explicit}" for -${name}`);
      value = explicit === "true";
    }
    if (def.repeat) {
      const prev = out[def.name];
      out[def.name] = [...(Array.isArray(prev) ? prev : []), String(value)];
    } else out[def.name] = value;
    i++;
  }
  return i;
}

export function parseArgs(argv: readonly string[]): ParsedArgs {
  const global: FlagValues = {};
  let i = parseFlagRun(argv, 0, GLOBAL_FLAGS, global);
  const command = argv[i];
  if (command === undefined) return { global, command: undefined, flags: {}, args: [] };
  const defs = COMMAND_FLAGS[command];
  if (!defs) throw usage(`No help topic for '${command}': unknown command`);
  const flags: FlagValues = {};
  i = parseFlagRun(argv, i + 1, defs, flags);
  let args = argv.slice(i);
  // runc's kill/delete/state take flags after the id too (`kill ID --all` is not runc syntax,
  // but `delete ID --force` from scripts is common): accept trailing flags where there is no
  // free-form command after the id.
  if (command !== "exec" && command !== "ps" && args.length > 0) {
    const rest: string[] = [];
    for (let j = 0; j < args.length; j++) {
      const a = args[j]!;
      if (a.startsWith("-") && a.length > 1 && !/^-\d+$/.test(a)) j = parseFlagRun(args, j, defs, flags) - 1;
      else rest.push(a);
    }
    args = rest;
  }
  const [min, max] = POSITIONALS[command] ?? [0, 0];
  if (args.length < min)
    throw usage(
      `"${command}" requires ${min === 1 ? "exactly one argument, the container id" : `${min} arguments`}`,
    );
  if (max !== -1 && args.length > max) throw usage(`"${command}" takes at most ${max} argument(s)`);
  return { global, command, flags, args };
}

export function str(v: FlagValues, name: string): string | undefined {
  const x = v[name];
  return typeof x === "string" ? x : undefined;
}

export function bool(v: FlagValues, name: string): boolean {
  return v[name] === true;
}

export function list(v: FlagValues, name: string): string[] {
  const x = v[name];
  return Array.isArray(x) ? x : [];
}

/** Container ids as runc accepts them (they become file names under the root). */
export function checkContainerId(id: string): string {
  if (!/^[A-Za-z0-9][A-Za-z0-9_+.-]{0,1023}$/.test(id) || id === "." || id === "..")
    throw usage(`invalid container id "${id}"`);
  return id;
}
