import { expect, it } from "vitest";
import { parseNetDev } from "./counters.js";

it("parses /proc/net/dev's receive and transmit byte counters, skipping the headers", () => {
  const text = [
    "Inter-|   Receive                                                |  Transmit",
    " face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed",
    "    lo:     120       2    0    0    0     0          0         0      120       2    0    0    0     0       0          0",
    "tap0_kt: 5000 10 0 0 0 0 0 0 987654 20 0 0 0 0 0 0",
    "broken: 1 2 3",
    "",
  ].join("\n");
  const parsed = parseNetDev(text);
  expect([...parsed.keys()]).toEqual(["lo", "tap0_kt"]);
  expect(parsed.get("tap0_kt")).toEqual({ rx: 5000, tx: 987654 });
});
