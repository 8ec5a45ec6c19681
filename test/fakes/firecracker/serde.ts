/**
 * How Firecracker reads a request body: serde_json with `deny_unknown_fields`. This module
 * parses JSON keeping token positions and checks a body against a swagger definition the way
 * serde would, so that the fake answers with serde's own messages and "at line L column C"
 * positions (firecracker-v1.0-observed.md), e.g.
 *   unknown field `bogus`, expected one of `vcpu_count`, `mem_size_mib`, ... at line 1 column 42.
 * Columns are those of the last character serde consumed, as serde_json reports them.
 */

export interface Pos {
  line: number;
  col: number;
}

export type JNode =
  | { kind: "object"; entries: { key: string; keyEnd: Pos; value: JNode }[]; end: Pos }
  | { kind: "array"; items: JNode[]; end: Pos }
  | { kind: "string"; value: string; end: Pos }
  | { kind: "number"; value: number; raw: string; end: Pos }
  | { kind: "bool"; value: boolean; end: Pos }
  | { kind: "null"; end: Pos };

export class SerdeError extends Error {
  constructor(
    readonly reason: string,
    readonly pos: Pos,
  ) {
    super(`${reason} at line ${pos.line} column ${pos.col}`);
  }
}

/** A small JSON parser that remembers where each token ended. */
class Parser {
  private i = 0;
  private line = 1;
  private col = 0;
  constructor(private readonly text: string) {}

  private pos(): Pos {
    return { line: this.line, col: this.col };
  }

  private advance(): string {
    const ch = this.text[this.i++] ?? "";
    if (ch === "\n") {
      this.line++;
      this.col = 0;
    } else {
      this.col++;
    }
    return ch;
  }

  private peek(): string | undefined {
    return this.text[this.i];
  }

  private skipWs(): void {
    while (this.peek() !== undefined && /[ \t\r\n]/.test(this.peek()!)) this.advance();
  }

  private fail(reason: string): never {
    throw new SerdeError(reason, this.pos());
  }

  parseDocument(): JNode {
    this.skipWs();
    if (this.peek() === undefined) this.fail("EOF while parsing a value");
    const value = this.parseValue();
    this.skipWs();
    if (this.peek() !== undefined) {
      this.advance();
      this.fail("trailing characters");
    }
    return value;
  }

  private parseValue(): JNode {
    this.skipWs();
    const ch = this.peek();
    if (ch === undefined) this.fail("EOF while parsing a value");
    if (ch === "{") return this.parseObject();
    if (ch === "[") return this.parseArray();
    if (ch === '"') {
      const value = this.parseString();
      return { kind: "string", value, end: this.pos() };
    }
    if (ch === "-" || (ch >= "0" && ch <= "9")) return this.parseNumber();
    if (ch === "t" || ch === "f" || ch === "n") return this.parseIdent();
    this.advance();
    this.fail("expected value");
  }

  private parseIdent(): JNode {
    const word = this.peek() === "t" ? "true" : this.peek() === "f" ? "false" : "null";
    for (const expected of word) {
      if (this.peek() === undefined) this.fail("EOF while parsing a value");
      if (this.advance() !== expected) this.fail("expected ident");
    }
    if (word === "null") return { kind: "null", end: this.pos() };
    return { kind: "bool", value: word === "true", end: this.pos() };
  }

  private parseNumber(): JNode {
    let raw = "";
    while (this.peek() !== undefined && /[-+0-9.eE]/.test(this.peek()!)) raw += this.advance();
    const value = Number(raw);
    if (!/^-?(0|[1-9]\d*)(\.\d+)?([eE][-+]?\d+)?$/.test(raw) || !Number.isFinite(value))
      this.fail("invalid number");
    return { kind: "number", value, raw, end: this.pos() };
  }

  private parseString(): string {
    this.advance(); // opening quote
    let out = "";
    for (;;) {
      const ch = this.peek();
      if (ch === undefined) this.fail("EOF while parsing a string");
      this.advance();
      if (ch === '"') return out;
      if (ch === "\\") {
        const esc = this.advance();
        const map: Record<string, string> = {
          '"': '"',
          "\\": "\\",
          "/": "/",
          b: "\b",
          f: "\f",
          n: "\n",
          r: "\r",
          t: "\t",
        };
        if (esc === "u") {
          let hex = "";
          for (let k = 0; k < 4; k++) hex += this.advance();
          if (!/^[0-9a-fA-F]{4}$/.test(hex)) this.fail("invalid escape");
          out += String.fromCharCode(parseInt(hex, 16));
        } else if (map[esc] !== undefined) {
          out += map[esc];
        } else {
          this.fail("invalid escape");
        }
      } else if (ch < " ") {
        this.fail("control character (\\u0000-\\u001F) found while parsing a string");
      } else {
        out += ch;
      }
    }
  }

  private parseObject(): JNode {
    this.advance(); // {
    const entries: { key: string; keyEnd: Pos; value: JNode }[] = [];
    this.skipWs();
    if (this.peek() === "}") {
      this.advance();
      return { kind: "object", entries, end: this.pos() };
    }
    for (;;) {
      this.skipWs();
      if (this.peek() === undefined) this.fail("EOF while parsing an object");
      if (this.peek() !== '"') {
        this.advance();
        this.fail("key must be a string");
      }
      const key = this.parseString();
      const keyEnd = this.pos();
      this.skipWs();
      if (this.peek() === undefined) this.fail("EOF while parsing an object");
      if (this.advance() !== ":") this.fail("expected `:`");
      const value = this.parseValue();
      entries.push({ key, keyEnd, value });
      this.skipWs();
      const sep = this.peek();
      if (sep === undefined) this.fail("EOF while parsing an object");
      this.advance();
      if (sep === "}") return { kind: "object", entries, end: this.pos() };
      if (sep !== ",") this.fail("expected `,` or `}`");
    }
  }

  private parseArray(): JNode {
    this.advance(); // [
    const items: JNode[] = [];
    this.skipWs();
    if (this.peek() === "]") {
      this.advance();
      return { kind: "array", items, end: this.pos() };
    }
    for (;;) {
      items.push(this.parseValue());
      this.skipWs();
      const sep = this.peek();
      if (sep === undefined) this.fail("EOF while parsing a list");
      this.advance();
      if (sep === "]") return { kind: "array", items, end: this.pos() };
      if (sep !== ",") this.fail("expected `,` or `]`");
    }
  }
}

export function parseJson(text: string): JNode {
  return new Parser(text).parseDocument();
}

/** The plain JavaScript value of a node. */
export function toValue(node: JNode): unknown {
  switch (node.kind) {
    case "object":
      return Object.fromEntries(node.entries.map((e) => [e.key, toValue(e.value)]));
    case "array":
      return node.items.map(toValue);
    case "null":
      return null;
    default:
      return node.value;
  }
}

// ---------------------------------------------------------------------------------------------
// serde-style checking against a swagger definition

export type Schema = { [key: string]: unknown };

/**
 * Rust declaration order of some request structs, which is the order serde lists expected
 * fields in. Taken from firecracker-v1.0-observed.md (error messages and GET /vm/config output);
 * other definitions fall back to the swagger's property order.
 */
export const FIELD_ORDER: Record<string, string[]> = {
  MachineConfiguration: [
    "vcpu_count",
    "mem_size_mib",
    "smt",
    "cpu_template",
    "track_dirty_pages",
    "huge_pages",
  ],
  SnapshotLoadParams: [
    "snapshot_path",
    "mem_file_path",
    "mem_backend",
    "enable_diff_snapshots",
    "track_dirty_pages",
    "resume_vm",
    "network_overrides",
    "vsock_override",
    "clock_realtime",
  ],
  Drive: [
    "drive_id",
    "path_on_host",
    "is_root_device",
    "partuuid",
    "is_read_only",
    "cache_type",
    "rate_limiter",
    "io_engine",
    "socket",
  ],
  BootSource: ["kernel_image_path", "initrd_path", "boot_args"],
  NetworkInterface: ["iface_id", "host_dev_name", "guest_mac", "rx_rate_limiter", "tx_rate_limiter", "mtu"],
  Vsock: ["vsock_id", "guest_cid", "uds_path"],
  Balloon: [
    "amount_mib",
    "deflate_on_oom",
    "stats_polling_interval_s",
    "free_page_hinting",
    "free_page_reporting",
  ],
};

function oneOf(names: string[], noun: "fields" | "variants"): string {
  const q = names.map((n) => `\`${n}\``);
  if (q.length === 0) return `there are no ${noun}`;
  if (q.length === 1) return `expected ${q[0]}`;
  if (q.length === 2) return `expected ${q[0]} or ${q[1]}`;
  return `expected one of ${q.join(", ")}`;
}

function unexpected(node: JNode): string {
  switch (node.kind) {
    case "string":
      return `string ${JSON.stringify(node.value)}`;
    case "number":
      return Number.isInteger(node.value) && !/[.eE]/.test(node.raw)
        ? `integer \`${node.raw}\``
        : `floating point \`${node.raw}\``;
    case "bool":
      return `boolean \`${String(node.value)}\``;
    case "null":
      return "null";
    case "array":
      return "sequence";
    case "object":
      return "map";
  }
}

function refName(s: Schema): string | undefined {
  const ref = s.$ref;
  return typeof ref === "string" && ref.startsWith("#/definitions/") ? ref.slice(14) : undefined;
}

function rustInt(s: Schema): string {
  return s.format === "int64" ? "u64" : "u32";
}

/**
 * Checks `node` against definition `def` of `definitions` as serde would; throws SerdeError with
 * serde's wording on the first problem. Schema bounds (minimum/maximum) are checked too, except
 * where the caller wants Firecracker's own semantic message (it handles those itself).
 */
export function checkAgainst(definitions: Record<string, Schema>, def: string, node: JNode): void {
  const schema = definitions[def];
  if (!schema) throw new Error(`no definition ${def}`);
  checkNode(definitions, schema, def, node);
}

function checkNode(defs: Record<string, Schema>, schema: Schema, name: string, node: JNode): void {
  const ref = refName(schema);
  if (ref) {
    const target = defs[ref];
    if (!target) throw new Error(`no definition ${ref}`);
    checkNode(defs, target, ref, node);
    return;
  }
  if (Array.isArray(schema.enum)) {
    const variants = schema.enum.map(String);
    if (node.kind !== "string")
      throw new SerdeError(`invalid type: ${unexpected(node)}, expected variant identifier`, node.end);
    if (!variants.includes(node.value))
      throw new SerdeError(`unknown variant \`${node.value}\`, ${oneOf(variants, "variants")}`, node.end);
    return;
  }
  const props =
    typeof schema.properties === "object" && schema.properties !== null
      ? (schema.properties as Record<string, Schema>)
      : undefined;
  const type = schema.type;
  if (props) {
    if (node.kind !== "object")
      throw new SerdeError(`invalid type: ${unexpected(node)}, expected struct ${name}`, node.end);
    const order = [
      ...(FIELD_ORDER[name] ?? []).filter((f) => f in props),
      ...Object.keys(props).filter((f) => !(FIELD_ORDER[name] ?? []).includes(f)),
    ];
    const seen = new Set<string>();
    for (const entry of node.entries) {
      const sub = props[entry.key];
      if (!sub)
        throw new SerdeError(`unknown field \`${entry.key}\`, ${oneOf(order, "fields")}`, entry.keyEnd);
      if (seen.has(entry.key)) throw new SerdeError(`duplicate field \`${entry.key}\``, entry.keyEnd);
      seen.add(entry.key);
      const required = Array.isArray(schema.required) && schema.required.includes(entry.key);
      if (entry.value.kind === "null" && !required) continue; // Option<T>: null is None
      checkNode(defs, sub, entry.key, entry.value);
    }
    const required = Array.isArray(schema.required) ? schema.required.map(String) : [];
    for (const field of order) {
      if (required.includes(field) && !seen.has(field))
        throw new SerdeError(`missing field \`${field}\``, node.end);
    }
    return;
  }
  switch (type) {
    case "string":
      if (node.kind !== "string")
        throw new SerdeError(`invalid type: ${unexpected(node)}, expected a string`, node.end);
      return;
    case "boolean":
      if (node.kind !== "bool")
        throw new SerdeError(`invalid type: ${unexpected(node)}, expected a boolean`, node.end);
      return;
    case "integer": {
      const int = rustInt(schema);
      if (node.kind !== "number")
        throw new SerdeError(`invalid type: ${unexpected(node)}, expected ${int}`, node.end);
      if (!Number.isInteger(node.value) || /[.eE]/.test(node.raw))
        throw new SerdeError(`invalid type: ${unexpected(node)}, expected ${int}`, node.end);
      if (node.value < 0)
        throw new SerdeError(`invalid value: ${unexpected(node)}, expected ${int}`, node.end);
      return;
    }
    case "number":
      if (node.kind !== "number")
        throw new SerdeError(`invalid type: ${unexpected(node)}, expected f64`, node.end);
      return;
    case "array": {
      if (node.kind !== "array")
        throw new SerdeError(`invalid type: ${unexpected(node)}, expected a sequence`, node.end);
      const items = typeof schema.items === "object" && schema.items !== null ? (schema.items as Schema) : {};
      for (const item of node.items) checkNode(defs, items, name, item);
      return;
    }
    default:
      // free-form objects (MMDS contents) take any JSON object
      if (type === "object" && node.kind !== "object")
        throw new SerdeError(`invalid type: ${unexpected(node)}, expected a map`, node.end);
  }
}

/** The message Firecracker puts in fault_message for a body serde refused. */
export function deserializeFault(err: SerdeError): string {
  return `An error occurred when deserializing the json body of a request: ${err.message}.`;
}
