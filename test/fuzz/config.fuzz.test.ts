import fc from "fast-check";
import { stringify } from "smol-toml";
import { afterAll, describe, expect, it } from "vitest";
import { defaultConfig } from "../../src/config/defaults.js";
import { parseConfigText } from "../../src/config/load.js";
import { isCocoonError } from "../../src/errors.js";
import { assetsFromAnnotations, ANNOTATION_PREFIX, ASSET_ANNOTATIONS } from "../../src/hypervisor/assets.js";
import { checkKernelParam, parseKernelCmdline } from "../../src/hypervisor/params.js";
import { isOneLine, record, report, runs } from "./runs.js";

/** Accepted, or refused with a coded CocoonError whose message is one line. */
function acceptedOrClear(fn: () => unknown, codes: string[]): void {
  try {
    fn();
  } catch (err) {
    expect(isCocoonError(err), String(err)).toBe(true);
    const e = err as { code: string; message: string };
    expect(codes).toContain(e.code);
    expect(isOneLine(e.message), e.message).toBe(true);
  }
}

const defaults = defaultConfig() as unknown as Record<string, Record<string, unknown>>;
/** [section path, key, default value] for every leaf of the default configuration. */
const leaves: [string[], string, unknown][] = [];
(function walk(obj: Record<string, unknown>, at: string[]): void {
  for (const [k, v] of Object.entries(obj)) {
    if (v && typeof v === "object" && !Array.isArray(v)) walk(v as Record<string, unknown>, [...at, k]);
    else leaves.push([at, k, v]);
  }
})(defaults, []);

const wrongValue = fc.oneof(
  fc.string({ maxLength: 12 }),
  fc.integer(),
  fc.double({ noNaN: true }),
  fc.boolean(),
  fc.array(fc.oneof(fc.string({ maxLength: 6 }), fc.integer()), { maxLength: 3 }),
  fc.constantFrom("qemu", "firecracker", "acrn", "kvm", "tcg", "virtio-fs", "none", "", -1, 0, 2 ** 40),
  fc.dictionary(fc.string({ maxLength: 5 }), fc.integer(), { maxKeys: 2 }),
);

/** A configuration shaped like the real one: known sections and keys (some misspelled), odd values. */
const structured = fc
  .array(
    fc.tuple(
      fc.constantFrom(...leaves),
      fc.oneof(wrongValue, fc.constant(undefined)),
      fc.oneof(fc.constant(""), fc.constant(""), fc.constantFrom("_", "x", "s")),
    ),
    { maxLength: 8 },
  )
  .map((entries) => {
    const doc: Record<string, unknown> = {};
    for (const [[at, key, def], value, typo] of entries) {
      let cur = doc;
      for (const s of at) cur = (cur[s] ??= {}) as Record<string, unknown>;
      cur[key + typo] = value === undefined ? def : value;
    }
    return stringify(doc);
  });

/** TOML-ish text: fragments of real syntax glued together, or arbitrary characters. */
const tomlish = fc.oneof(
  fc
    .array(
      fc.oneof(
        fc.constantFrom(
          "[runtime]",
          "[hypervisor.qemu]",
          "[agent]",
          "[[x]]",
          "a = 1",
          'b = "x"',
          "c = [1,",
          "= 3",
          "d.e = true",
          "#",
          '"""',
          "'",
          "\\u00",
          "{",
          "}",
          "1979-05-27T07:32:00Z",
        ),
        fc.string({ maxLength: 10 }),
      ),
      { maxLength: 12 },
    )
    .map((parts) => parts.join("\n")),
  fc.string({ maxLength: 200 }),
  fc.uint8Array({ maxLength: 100 }).map((a) => Buffer.from(a).toString("latin1")),
);

afterAll(() => report("config"));

describe("fuzz: TOML configuration", () => {
  it("arbitrary TOML text is parsed or refused with ERR_CONFIG_FILE / ERR_INVALID_CONFIG in one line", () => {
    const n = runs(8_000);
    fc.assert(
      fc.property(tomlish, (text) =>
        acceptedOrClear(
          () => parseConfigText(text, "/fuzz/config.toml"),
          ["ERR_CONFIG_FILE", "ERR_INVALID_CONFIG"],
        ),
      ),
      { numRuns: n },
    );
    record("toml-text", n);
  });

  it("structurally valid configurations with wrong values or keys are refused naming the key", () => {
    const n = runs(8_000);
    fc.assert(
      fc.property(structured, (text) =>
        acceptedOrClear(() => parseConfigText(text, "/fuzz/config.toml"), ["ERR_INVALID_CONFIG"]),
      ),
      { numRuns: n },
    );
    record("toml-structured", n);
  });
});

const annotationName = fc.oneof(
  fc.constantFrom(
    ...Object.values(ASSET_ANNOTATIONS).flatMap((a) => [
      ANNOTATION_PREFIX + a.path,
      ANNOTATION_PREFIX + a.hash,
    ]),
    ANNOTATION_PREFIX + "kernel_params",
    "io.cocoon.config.asset_hash_type",
  ),
  fc.string({ maxLength: 12 }).map((s) => ANNOTATION_PREFIX + s),
  fc.string({ maxLength: 20 }),
);
const annotationValue = fc.oneof(
  fc.constantFrom(
    "/usr/bin/qemu-system-x86_64",
    "/boot/vmlinuz",
    "relative/path",
    "",
    "sha512",
    "md5",
    "/x/../y",
  ),
  fc.string({ maxLength: 20 }),
);
const policy = fc.record({
  enableAnnotations: fc.array(
    fc.oneof(
      fc.constantFrom(".*", "kernel", "kernel_params", "(", "[a-", "path|image"),
      fc.string({ maxLength: 6 }),
    ),
    { maxLength: 3 },
  ),
  validHypervisorPaths: fc.array(fc.constantFrom("/usr/bin/*", "/**", "[", "**/qemu*"), { maxLength: 2 }),
  validCtlPaths: fc.array(fc.constantFrom("/usr/bin/*", "/**"), { maxLength: 2 }),
  validJailerPaths: fc.array(fc.constantFrom("/usr/bin/*", "/**"), { maxLength: 2 }),
});

describe("fuzz: annotations", () => {
  it("asset annotations under any policy are accepted or refused with a coded one-line error", () => {
    const n = runs(10_000);
    fc.assert(
      fc.property(fc.dictionary(annotationName, annotationValue, { maxKeys: 5 }), policy, (annotations, p) =>
        acceptedOrClear(
          () => assetsFromAnnotations(annotations, p),
          ["ERR_ANNOTATION_FORBIDDEN", "ERR_INVALID_CONFIG", "ERR_ASSET_INVALID"],
        ),
      ),
      { numRuns: n },
    );
    record("annotations", n);
  });

  it("kernel_params annotations parse into params that are checked, never crash", () => {
    const n = runs(6_000);
    fc.assert(
      fc.property(
        fc.oneof(
          fc.string({ maxLength: 60 }),
          fc
            .array(fc.constantFrom("a=b", "=", "x", " ", "quiet", "c==d", "\t"), { maxLength: 8 })
            .map((a) => a.join(" ")),
        ),
        (text) =>
          acceptedOrClear(() => {
            for (const p of parseKernelCmdline(text)) checkKernelParam(p);
          }, ["ERR_INVALID_KERNEL_PARAM"]),
      ),
      { numRuns: n },
    );
    record("kernel-params", n);
  });
});
