import { createReadStream, readdirSync, readFileSync } from "node:fs";
import { spawn } from "node:child_process";

/** struct input_event on 64-bit Linux: timeval (16 bytes), type u16, code u16, value s32. */
const EVENT_SIZE = 24;
const EV_KEY = 1;
const KEY_POWER = 116;

/**
 * Turns the ACPI power button (QMP `system_powerdown`) into a clean `poweroff`: with no acpid
 * in the guest, the kernel's button event would otherwise go nowhere and the host would have
 * to wait for its timeout and kill the VM.
 *
 * On the way to the agent's first answer (it must watch before a host can ask for a powerdown):
 * sysfs is read synchronously, each read a few microseconds of kernel work, where an fs/promises
 * call costs a round trip through the libuv threadpool (issue 14, cold start).
 */
export function watchPowerButton(log: (m: string) => void): void {
  let entries: string[] = [];
  try {
    entries = readdirSync("/sys/class/input");
  } catch {
    return;
  }
  for (const entry of entries.filter((e) => e.startsWith("event"))) {
    let name = "";
    try {
      name = readFileSync(`/sys/class/input/${entry}/device/name`, "utf8");
    } catch {
      // no name: not the power button
    }
    if (!/power button/i.test(name)) continue;
    let pending = Buffer.alloc(0);
    const stream = createReadStream(`/dev/input/${entry}`);
    stream.on("data", (chunk) => {
      pending = Buffer.concat([pending, Buffer.from(chunk)]);
      while (pending.length >= EVENT_SIZE) {
        const type = pending.readUInt16LE(16);
        const code = pending.readUInt16LE(18);
        const value = pending.readInt32LE(20);
        pending = pending.subarray(EVENT_SIZE);
        if (type === EV_KEY && code === KEY_POWER && value === 1) {
          log("power button pressed: powering off");
          spawn("/sbin/poweroff", [], { stdio: "ignore" }).on("error", (e) => log(`poweroff: ${e.message}`));
        }
      }
    });
    stream.on("error", (e) => log(`power button ${entry}: ${e.message}`));
  }
}
