import { Ajv, type ValidateFunction } from "ajv";
import addFormatsModule from "ajv-formats";
import {
  DEFINITION_HISTORY,
  ENDPOINT_HISTORY,
  ENUM_HISTORY,
  FIELD_HISTORY,
  MERGED_DEFINITIONS,
  REQUIRED_HISTORY,
  type EndpointHistory,
  type Json,
  type Schema,
  type VersionSpan,
} from "../../gen/firecracker/index.js";
import { HypervisorError } from "../../errors.js";
import { FirecrackerRequestError, FirecrackerVersionError } from "./errors.js";
import { compareVersions, formatVersion, parseVersion, type FcVersion } from "./version.js";

/**
 * The Firecracker API as one given version has it, derived from the generated merged
 * definitions and version history (src/gen/firecracker). Used by the client to refuse what the
 * running version lacks, to validate request and response bodies, and to spot deprecated fields.
 */

const addFormats = addFormatsModule as unknown as (ajv: Ajv) => Ajv;

export function inSpan(span: VersionSpan | undefined, v: FcVersion): boolean {
  if (!span) return true;
  if (span.since !== undefined && compareVersions(v, span.since) < 0) return false;
  if (span.removed !== undefined && compareVersions(v, span.removed) >= 0) return false;
  return true;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function refName(s: Schema): string | undefined {
  const ref = s.$ref;
  return typeof ref === "string" && ref.startsWith("#/definitions/") ? ref.slice(14) : undefined;
}

function schemaProps(s: Schema): Record<string, Schema> {
  return (isObject(s.properties) ? s.properties : {}) as Record<string, Schema>;
}

/**
 * Filters a merged schema down to what version `v` has. `strict` (requests) closes objects as
 * Firecracker's serde does; lenient (answers) leaves them open and lets optional fields be null.
 */
function filterSchema(s: Schema, owner: string, v: FcVersion, strict: boolean): Schema {
  const out: Schema = {};
  for (const [key, value] of Object.entries(s)) {
    if (key === "properties" || key === "required" || key === "enum" || key === "items") continue;
    out[key] = structuredClone(value);
  }
  if (Array.isArray(s.enum)) {
    out.enum = s.enum.filter((val) => inSpan(ENUM_HISTORY[`${owner}=${String(val)}`], v));
  }
  if (isObject(s.items)) out.items = filterSchema(s.items as Schema, owner, v, strict);
  if (isObject(s.properties)) {
    const props: Record<string, Json> = {};
    const required: string[] = [];
    const mergedRequired = Array.isArray(s.required) ? s.required.map(String) : [];
    for (const [name, sub] of Object.entries(schemaProps(s))) {
      const key = `${owner}.${name}`;
      if (!inSpan(FIELD_HISTORY[key], v)) continue;
      const req = REQUIRED_HISTORY[key];
      const isRequired = req ? inSpan(req, v) : mergedRequired.includes(name);
      if (isRequired) required.push(name);
      const filtered = filterSchema(sub, key, v, strict);
      // Answers carry `null` for unset optional fields (GET /vm/config: "partuuid": null).
      props[name] = strict || isRequired ? filtered : { anyOf: [{ type: "null" }, filtered] };
    }
    out.properties = props;
    if (required.length) out.required = required;
    if (strict) out.additionalProperties = false;
  }
  return out;
}

/** Every definition `v` has, as JSON schemas referring to each other by "#/definitions/Name". */
export function definitionsFor(v: FcVersion, options: { strict?: boolean } = {}): Record<string, Schema> {
  const out: Record<string, Schema> = {};
  for (const [name, schema] of Object.entries(MERGED_DEFINITIONS)) {
    if (!inSpan(DEFINITION_HISTORY[name], v)) continue;
    out[name] = filterSchema(schema, name, v, options.strict ?? false);
  }
  return out;
}

export interface EndpointInfo extends EndpointHistory {
  key: string;
  method: string;
  template: string;
}

/** The endpoint for a method and path template ("/drives/{drive_id}"), whatever the version. */
export function endpointInfo(method: string, template: string): EndpointInfo | undefined {
  const key = `${method.toUpperCase()} ${template}`;
  const e = ENDPOINT_HISTORY[key];
  return e ? { ...e, key, method: method.toUpperCase(), template } : undefined;
}

/** Finds the endpoint a concrete path ("/drives/rootfs") belongs to, with its path parameters. */
export function matchEndpoint(
  method: string,
  concretePath: string,
): { info: EndpointInfo; params: Record<string, string> } | undefined {
  for (const key of Object.keys(ENDPOINT_HISTORY)) {
    const space = key.indexOf(" ");
    if (key.slice(0, space) !== method.toUpperCase()) continue;
    const template = key.slice(space + 1);
    const names: string[] = [];
    const re = new RegExp(
      "^" +
        template.replace(/[.*+?^$()|[\]\\]/g, "\\$&").replace(/\{(\w+)\}/g, (_m, name: string) => {
          names.push(name);
          return "([^/]+)";
        }) +
        "$",
    );
    const m = re.exec(concretePath);
    if (!m) continue;
    const params: Record<string, string> = {};
    names.forEach((n, i) => (params[n] = decodeURIComponent(m[i + 1] ?? "")));
    return { info: endpointInfo(method, template)!, params };
  }
  return undefined;
}

/** Resource ids in paths: non-empty, alphanumerics and `_` only (firecracker-api.md §1). */
export const RESOURCE_ID_RE = /^[A-Za-z0-9_]+$/;

/** strict: request bodies; partial: PATCH bodies (every field optional); lenient: answers. */
type SchemaMode = "strict" | "partial" | "lenient";

type Compiled = Record<SchemaMode, Map<string, ValidateFunction>>;

/** The definitions with no required fields (what a partial update may send). */
function withoutRequired(defs: Record<string, Schema>): Record<string, Schema> {
  const out: Record<string, Schema> = {};
  for (const [name, schema] of Object.entries(defs)) {
    const { required: _required, ...rest } = schema;
    out[name] = rest;
  }
  return out;
}

/** One version's view of the API. Cheap to get: instances are cached per version. */
export class VersionedApi {
  private static cache = new Map<string, VersionedApi>();
  private readonly ajv = new Ajv({ strict: false, allErrors: false });
  private readonly compiled: Compiled = { strict: new Map(), partial: new Map(), lenient: new Map() };
  readonly label: string;

  private constructor(readonly version: FcVersion) {
    addFormats(this.ajv);
    this.label = formatVersion(version);
    const strict = definitionsFor(version, { strict: true });
    this.ajv.addSchema({ $id: "strict", definitions: strict });
    this.ajv.addSchema({ $id: "partial", definitions: withoutRequired(strict) });
    this.ajv.addSchema({ $id: "lenient", definitions: definitionsFor(version, { strict: false }) });
  }

  static for(version: FcVersion | string): VersionedApi {
    const v = typeof version === "string" ? parseVersion(version) : version;
    const key = formatVersion(v);
    let api = VersionedApi.cache.get(key);
    if (!api) {
      api = new VersionedApi(v);
      VersionedApi.cache.set(key, api);
    }
    return api;
  }

  private validator(def: string, mode: SchemaMode): ValidateFunction {
    const map = this.compiled[mode];
    let fn = map.get(def);
    if (!fn) {
      fn = this.ajv.compile({ $ref: `${mode}#/definitions/${def}` });
      map.set(def, fn);
    }
    return fn;
  }

  hasDefinition(def: string): boolean {
    return inSpan(DEFINITION_HISTORY[def], this.version) && MERGED_DEFINITIONS[def] !== undefined;
  }

  /** Refuses an endpoint this version does not have, saying which version added it. */
  checkEndpoint(info: EndpointInfo): void {
    if (!inSpan(info, this.version)) {
      throw new FirecrackerVersionError({
        what: `the endpoint ${info.key}`,
        running: this.version.raw,
        ...(compareVersions(this.version, info.since) < 0
          ? { since: info.since }
          : { removed: info.removed }),
      });
    }
  }

  /**
   * Checks a request body before it is sent: every field, nested field and enum value must
   * exist in this version (else FirecrackerVersionError naming the version that added it), then
   * the body must match this version's schema (else FirecrackerRequestError). `partial`: a
   * PATCH that updates some fields (every real version accepts `{"vcpu_count":2}` on PATCH
   * /machine-config although the spec names the full definition); it must not be empty.
   */
  checkBody(def: string, body: unknown, options: { partial?: boolean } = {}): void {
    this.checkKnown(def, MERGED_DEFINITIONS[def], body, def);
    if (options.partial && isObject(body) && Object.keys(body).length === 0) {
      throw new FirecrackerRequestError(
        `an empty ${def} update changes nothing (Firecracker refuses it: "Empty PATCH request."); name at least one field`,
        { definition: def },
      );
    }
    const fn = this.validator(def, options.partial ? "partial" : "strict");
    if (!fn(body)) {
      const e = fn.errors?.[0];
      const where = e?.instancePath ? `${def}${e.instancePath.replace(/\//g, ".")}` : def;
      throw new FirecrackerRequestError(
        `invalid ${def} for Firecracker ${this.label}: ${where} ${e?.message ?? "is invalid"}`,
        {
          definition: def,
          ajv: e ? { path: e.instancePath, keyword: e.keyword, params: e.params } : undefined,
        },
      );
    }
  }

  private checkKnown(owner: string, schema: Schema | undefined, value: unknown, where: string): void {
    if (!schema) return;
    const ref = refName(schema);
    if (ref) {
      if (!this.hasDefinition(ref) && DEFINITION_HISTORY[ref]) {
        throw new FirecrackerVersionError({
          what: `${where} (${ref})`,
          running: this.version.raw,
          ...DEFINITION_HISTORY[ref],
        });
      }
      this.checkKnown(ref, MERGED_DEFINITIONS[ref], value, where);
      return;
    }
    if (Array.isArray(schema.enum) && value !== undefined) {
      const span = ENUM_HISTORY[`${owner}=${String(value)}`];
      if (span && !inSpan(span, this.version)) {
        throw new FirecrackerVersionError({
          what: `the value ${JSON.stringify(value)} of ${where}`,
          running: this.version.raw,
          ...span,
        });
      }
    }
    if (Array.isArray(value) && isObject(schema.items)) {
      value.forEach((item, i) => this.checkKnown(owner, schema.items as Schema, item, `${where}[${i}]`));
      return;
    }
    if (!isObject(value) || !isObject(schema.properties)) return;
    const props = schemaProps(schema);
    for (const name of Object.keys(value)) {
      const key = `${owner}.${name}`;
      const sub = props[name];
      if (!sub) {
        throw new FirecrackerRequestError(
          `unknown field "${name}" in ${owner} (${where}): no Firecracker version accepts it; known fields are ${Object.keys(props).join(", ")}`,
          { definition: owner, field: name },
        );
      }
      const span = FIELD_HISTORY[key];
      if (span && !inSpan(span, this.version)) {
        throw new FirecrackerVersionError({
          what: `the field ${where === owner ? key : `${where}.${name}`}`,
          running: this.version.raw,
          ...(span.since !== undefined && compareVersions(this.version, span.since) < 0
            ? { since: span.since }
            : { removed: span.removed }),
        });
      }
      this.checkKnown(key, sub, value[name], where === owner ? key : `${where}.${name}`);
    }
  }

  /** Fields of `body` this version deprecates ("Vsock.vsock_id"): Firecracker answers them with `Deprecation: true`. */
  deprecatedFields(def: string, body: unknown): string[] {
    const out: string[] = [];
    if (!isObject(body)) return out;
    for (const name of Object.keys(body)) {
      const dep = FIELD_HISTORY[`${def}.${name}`]?.deprecated;
      if (dep !== undefined && compareVersions(this.version, dep) >= 0) out.push(`${def}.${name}`);
    }
    return out;
  }

  /**
   * Validates a response body. Lenient on purpose: a newer Firecracker may add fields, and v1.0
   * answers GET /vm/config with other key names than its spec documents (firecracker-api.md §13.1).
   */
  validateResponse<T>(def: string, body: unknown): T {
    const fn = this.validator(def, "lenient");
    if (!fn(body)) {
      const e = fn.errors?.[0];
      throw new HypervisorError(
        "ERR_VMM_API",
        `Firecracker ${this.label} answered with an invalid ${def}: ${e?.instancePath || "<root>"} ${e?.message ?? "is invalid"}`,
        { details: { definition: def } },
      );
    }
    return body as T;
  }
}
