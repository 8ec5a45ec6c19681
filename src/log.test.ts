import { readFile } from "node:fs/promises";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { tempDir } from "../test/helpers/tmp.js";
import { DroppingFileDestination, fileLogger } from "./log.js";

let dir: string;
let cleanup: () => Promise<void>;
beforeEach(async () => ({ dir, cleanup } = await tempDir()));
afterEach(() => cleanup());

describe("the file logger", () => {
  it("appends JSON lines", async () => {
    const file = path.join(dir, "logs", "cocoon.log");
    const logger = fileLogger(file, "info");
    logger.info({ n: 1 }, "one");
    logger.debug("not at this level");
    const lines = (await readFile(file, "utf8")).trim().split("\n");
    expect(lines).toHaveLength(1);
    expect(JSON.parse(lines[0]!)).toMatchObject({ n: 1, msg: "one" });
  });

  // Regression (issue 12): on a full state root, a log line that could not be written threw
  // out of logger.info() and made `cocoon ps` fail.
  it("drops and counts a line it cannot write (a full disk) instead of throwing", () => {
    const dest = new DroppingFileDestination("/dev/full");
    try {
      expect(() => dest.write('{"msg":"lost"}\n')).not.toThrow();
      expect(dest.dropped).toBe(1);
    } finally {
      dest.close();
    }
  });

  it("pointed at /dev/full, logging neither throws nor crashes the process later", async () => {
    const logger = fileLogger("/dev/full", "info");
    const uncaught: unknown[] = [];
    const onUncaught = (err: unknown) => uncaught.push(err);
    process.on("uncaughtException", onUncaught);
    try {
      for (let i = 0; i < 10; i++) expect(() => logger.info({ i }, "no space")).not.toThrow();
      await new Promise((r) => setTimeout(r, 50));
      expect(uncaught).toEqual([]);
    } finally {
      process.off("uncaughtException", onUncaught);
    }
  });
});
