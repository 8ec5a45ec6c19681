import { chmod, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { PassThrough, Readable } from "node:stream";
import { afterEach, beforeEach, expect, it } from "vitest";
import { isProcessAlive } from "../host/proc.js";
import { ProcessIo } from "./stdio.js";

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(path.join(tmpdir(), "shim-stdio-"));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** A logging binary as containerd defines one: fd 3 stdout, fd 4 stderr, fd 5 closed when ready. */
async function logger(): Promise<string> {
  const file = path.join(dir, "logger.sh");
  await writeFile(
    file,
    [
      "#!/bin/sh",
      'echo "$$ $CONTAINER_NAMESPACE/$CONTAINER_ID $*" > "$2/args"',
      "sleep 0.2",
      "exec 5>&-",
      'cat <&3 > "$2/out" & cat <&4 > "$2/err" &',
      "exec 3<&- 4<&-",
      "wait",
      'echo done >> "$2/args"',
      "",
    ].join("\n"),
  );
  await chmod(file, 0o755);
  return file;
}

it("binary:// runs containerd's logging protocol: args and env, fd 3/4 streams, fd 5 ready; ends with the streams", async () => {
  const uri = `binary://${await logger()}?-dir=${encodeURIComponent(dir)}`;
  const io = await ProcessIo.open({ stdin: "", stdout: uri, stderr: uri }, "task1", "ns1");
  const args = (await readFile(path.join(dir, "args"), "utf8")).trim().split(" ");
  expect(args.slice(1)).toEqual(["ns1/task1", "-dir", dir]);
  const pid = Number(args[0]);
  const big = Buffer.alloc(1 << 20, "x");
  await io.pump({
    stdin: undefined,
    stdout: Readable.from([Buffer.from("out\n"), big]),
    stderr: Readable.from(["err\n"]),
  });
  // pump resolves once the logger has read everything and exited.
  expect(await isProcessAlive(pid)).toBe(false);
  expect((await readFile(path.join(dir, "out"))).length).toBe(4 + big.length);
  expect(await readFile(path.join(dir, "err"), "utf8")).toBe("err\n");
  expect(await readFile(path.join(dir, "args"), "utf8")).toContain("done");
});

it("a logging binary that cannot start is an error, not a hang", async () => {
  const uri = `binary://${path.join(dir, "missing")}`;
  await expect(ProcessIo.open({ stdin: "", stdout: uri, stderr: uri }, "t", "n")).rejects.toThrow(
    /logging binary/,
  );
});

it("file:// appends both streams to one file when they name the same file", async () => {
  const uri = `file://${path.join(dir, "log")}`;
  const io = await ProcessIo.open({ stdin: "", stdout: uri, stderr: uri }, "t", "n");
  const stderr = new PassThrough();
  stderr.end("b\n");
  await io.pump({ stdin: undefined, stdout: Readable.from(["a\n"]), stderr });
  expect((await readFile(path.join(dir, "log"), "utf8")).split("\n").sort()).toEqual(["", "a", "b"]);
});
