import { stat, writeFile } from "node:fs/promises";
import { run } from "./run.js";

/** VM templates: installed by the rootfs builder (src/guest/guestctl/cocoon-guestctl.c). */
export const GUEST_CTL_HELPER = "/usr/bin/cocoon-guestctl";

/** Older rootfs images lack the helper: the agent then falls back to `date -s` and a plain write. */
export const hasGuestCtl = (): Promise<boolean> =>
  stat(GUEST_CTL_HELPER).then(
    () => true,
    () => false,
  );

/** Sets the clock; shifting by the offset measured now keeps milliseconds (`date -s` sets whole seconds). */
export async function setGuestClock(unixMs: number): Promise<void> {
  if (await hasGuestCtl())
    await run(GUEST_CTL_HELPER, ["shift-clock", String(Math.round(unixMs - Date.now()))]);
  else await run("date", ["-s", `@${Math.floor(unixMs / 1000)}`]);
}

/**
 * VM templates: the helper credits the bytes and re-keys the CRNG at once (a clone must not
 * read its template's random stream). Without it, writing only mixes them in.
 */
export async function reseedGuest(bytes: Buffer): Promise<void> {
  if (await hasGuestCtl()) await run(GUEST_CTL_HELPER, ["reseed"], { input: bytes });
  else await writeFile("/dev/urandom", bytes);
}

/** Both, in one helper process when there is one (each spawn costs ~0.1 s in a clone under TCG). */
export async function freshenGuest(bytes: Buffer, unixMs: number): Promise<void> {
  if (await hasGuestCtl())
    await run(GUEST_CTL_HELPER, ["freshen", String(Math.round(unixMs - Date.now()))], { input: bytes });
  else {
    await reseedGuest(bytes);
    await setGuestClock(unixMs);
  }
}
