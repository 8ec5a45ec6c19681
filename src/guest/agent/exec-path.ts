import { constants } from "node:fs";
import { access, lstat, readlink, stat } from "node:fs/promises";
import path from "node:path";
import { AgentOpError } from "./errors.js";

const MAX_LINKS = 40;

/**
 * Resolves `p` inside `root` the way the kernel would inside a chroot: `..` stops at the
 * root and absolute symlinks are taken relative to it, so a container path never escapes
 * its rootfs. Returns the host-side (guest-side) path; components need not exist.
 */
export async function resolveInRoot(root: string, p: string): Promise<string> {
  const parts = p.split("/").filter((c) => c !== "" && c !== ".");
  const resolved: string[] = [];
  let links = 0;
  while (parts.length) {
    const part = parts.shift()!;
    if (part === "..") {
      resolved.pop();
      continue;
    }
    const candidate = path.join(root, ...resolved, part);
    let st;
    try {
      st = await lstat(candidate);
    } catch {
      resolved.push(part, ...parts);
      break;
    }
    if (st.isSymbolicLink()) {
      if (++links > MAX_LINKS)
        throw new AgentOpError("INVALID_ARGUMENT", `too many levels of symbolic links in ${p}`);
      const target = await readlink(candidate);
      if (target.startsWith("/")) resolved.length = 0;
      parts.unshift(...target.split("/").filter((c) => c !== "" && c !== "."));
      continue;
    }
    resolved.push(part);
  }
  return path.join(root, ...resolved);
}

function searchPath(env: readonly string[]): string[] {
  const entry = [...env].reverse().find((e) => e.startsWith("PATH="));
  const value = entry ? entry.slice(5) : "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
  return value.split(":").filter(Boolean);
}

/**
 * Finds the program a process would run, inside `root` ("/" for the guest itself), so a
 * missing or non-executable program is reported clearly (exit 127 or 126, as shells do)
 * instead of as an opaque failure of runc or of the spawn.
 */
export async function checkExecutable(
  root: string,
  program: string,
  env: readonly string[],
  cwd: string,
): Promise<void> {
  const candidates = program.includes("/")
    ? [program.startsWith("/") ? program : path.posix.join(cwd, program)]
    : searchPath(env).map((dir) => path.posix.join(dir, program));
  let found: string | undefined;
  for (const c of candidates) {
    // In the guest's own root the kernel's lookup is already confined to "/" (`..` stops there,
    // absolute links start there), so walking the path in JavaScript, one lstat per component,
    // would only repeat it: that walk was about a quarter of an exec's time under emulation
    // (issue 14). Container roots still need it.
    const resolved = root === "/" ? path.posix.resolve(c) : await resolveInRoot(root, c);
    try {
      if ((await stat(resolved)).isFile()) {
        found = resolved;
        break;
      }
    } catch {
      // try the next directory
    }
  }
  if (!found) {
    throw new AgentOpError(
      "EXEC_NOT_FOUND",
      program.includes("/") ? `${program}: no such file` : `${program}: executable file not found in $PATH`,
    );
  }
  try {
    await access(found, constants.X_OK);
  } catch {
    throw new AgentOpError("EXEC_NOT_EXECUTABLE", `${program}: permission denied (not executable)`);
  }
}
