import { open, stat } from "node:fs/promises";

/** Lines that mean the guest kernel died. */
const PANIC_RE = /Kernel panic - not syncing[^\n]*/;

/** The last `maxBytes` of a file as text (empty if missing). */
export async function readTail(file: string, maxBytes = 8192): Promise<string> {
  try {
    const st = await stat(file);
    const fh = await open(file, "r");
    try {
      const len = Math.min(st.size, maxBytes);
      const buf = Buffer.alloc(len);
      await fh.read(buf, 0, len, st.size - len);
      return buf.toString("utf8");
    } finally {
      await fh.close();
    }
  } catch {
    return "";
  }
}

/** The last `n` non-empty lines of a text, for error messages. */
export function lastLines(text: string, n: number): string {
  return text
    .split(/\r?\n/)
    .map((l) => l.trimEnd())
    .filter(Boolean)
    .slice(-n)
    .join("\n");
}

/**
 * Watches a growing console log for a kernel panic while the VM boots. Polls the file (QEMU
 * appends to it) and resolves with the panic line; `stop()` ends the watch.
 */
export function watchForPanic(file: string, intervalMs = 100): { panic: Promise<string>; stop: () => void } {
  let stopped = false;
  let offset = 0;
  let carry = "";
  let timer: NodeJS.Timeout | undefined;
  const panic = new Promise<string>((resolve) => {
    const tick = async (): Promise<void> => {
      if (stopped) return;
      try {
        const st = await stat(file);
        if (st.size > offset) {
          const fh = await open(file, "r");
          try {
            const buf = Buffer.alloc(st.size - offset);
            await fh.read(buf, 0, buf.length, offset);
            offset = st.size;
            const text = carry + buf.toString("utf8");
            const m = PANIC_RE.exec(text);
            if (m) {
              resolve(m[0].trim());
              return;
            }
            carry = text.slice(-200);
          } finally {
            await fh.close();
          }
        }
      } catch {
        // not created yet
      }
      if (!stopped) timer = setTimeout(() => void tick(), intervalMs);
    };
    void tick();
  });
  return {
    panic,
    stop: () => {
      stopped = true;
      if (timer) clearTimeout(timer);
    },
  };
}
