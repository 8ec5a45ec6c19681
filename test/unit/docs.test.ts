import { readFile } from "node:fs/promises";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { renderErrorDocs } from "../../scripts/gen-error-docs.js";

describe("generated docs", () => {
  it("docs/errors.md matches the error catalogue (npm run gen:errors)", async () => {
    const file = path.resolve(import.meta.dirname, "../../docs/errors.md");
    expect(await readFile(file, "utf8")).toBe(renderErrorDocs());
  });
});
