// A child process for lock tests. Modes:
//   count <lock> <counterFile> <n>   n times: take the lock, read-increment-write the counter slowly
//   hold <lock>                      take the lock, print "held", then wait to be killed
import { readFile, writeFile } from "node:fs/promises";
import { setTimeout as sleep } from "node:timers/promises";
import { acquireLock } from "../../src/store/lock.js";

const [mode, lockPath, counterFile, n] = process.argv.slice(2);
if (mode === "count") {
  for (let i = 0; i < Number(n); i++) {
    const lock = await acquireLock(lockPath!, { timeoutMs: 60_000, pollMs: 2 });
    const value = Number(await readFile(counterFile!, "utf8"));
    await sleep(1);
    await writeFile(counterFile!, String(value + 1));
    await lock.release();
  }
} else if (mode === "hold") {
  await acquireLock(lockPath!, { purpose: "test holder" });
  process.stdout.write("held\n");
  await sleep(600_000);
}
