import { stat } from "node:fs/promises";

/** VM templates: installed by the rootfs builder (src/guest/guestctl/cocoon-guestctl.c). */
export const GUEST_CTL_HELPER = "/usr/bin/cocoon-guestctl";

/** Older rootfs images lack the helper: the agent then falls back to `date -s` and a plain write. */
export const hasGuestCtl = (): Promise<boolean> =>
  stat(GUEST_CTL_HELPER).then(
    () => true,
    () => false,
  );
