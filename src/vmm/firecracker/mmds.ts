import { readFile } from "node:fs/promises";
import { request, type Dispatcher } from "undici";
import { Agent } from "undici";
import { HypervisorError, messageOf } from "../../errors.js";

/**
 * MMDS from the guest's side (firecracker-api.md §8). The host side (PUT /mmds/config, PUT/PATCH/GET
 * /mmds) is in the client; this is what code inside the guest (or a test reaching the guest-facing
 * endpoint) does: V1 is a plain GET of a JSON-pointer path; V2 first gets a session token with
 * PUT /latest/api/token and sends it in X-metadata-token on every GET.
 */

export const MMDS_DEFAULT_ADDRESS = "169.254.169.254";
export const MMDS_MAX_TOKEN_TTL_S = 21_600;

export interface MmdsGuestClientOptions {
  version: "V1" | "V2";
  /** TCP address (default 169.254.169.254:80), or a unix socket path for the fake's guest endpoint. */
  address?: string;
  port?: number;
  socketPath?: string;
  /** Session token lifetime for V2 (1..21600 s). */
  tokenTtlSeconds?: number;
}

export class MmdsGuestClient {
  private token: { value: string; expires: number } | undefined;
  private readonly dispatcher: Dispatcher;
  private readonly origin: string;

  constructor(private readonly o: MmdsGuestClientOptions) {
    const ttl = o.tokenTtlSeconds ?? 60;
    if (!Number.isInteger(ttl) || ttl < 1 || ttl > MMDS_MAX_TOKEN_TTL_S) {
      throw new HypervisorError(
        "ERR_INVALID_ARGUMENT",
        `MMDS token TTL must be 1..${MMDS_MAX_TOKEN_TTL_S} seconds, got ${ttl}`,
      );
    }
    this.dispatcher = new Agent(o.socketPath ? { connect: { socketPath: o.socketPath } } : {});
    this.origin = `http://${o.address ?? MMDS_DEFAULT_ADDRESS}:${o.port ?? 80}`;
  }

  /** A V2 session token (cached until shortly before it expires). */
  async sessionToken(): Promise<string> {
    if (this.token && this.token.expires > Date.now() + 1_000) return this.token.value;
    const ttl = this.o.tokenTtlSeconds ?? 60;
    const res = await request(`${this.origin}/latest/api/token`, {
      method: "PUT",
      headers: { "x-metadata-token-ttl-seconds": String(ttl) },
      dispatcher: this.dispatcher,
    });
    const text = await res.body.text();
    if (res.statusCode !== 200)
      throw new HypervisorError(
        "ERR_VMM_API",
        `MMDS refused a session token (${res.statusCode}): ${text.trim()}`,
      );
    this.token = { value: text.trim(), expires: Date.now() + ttl * 1000 };
    return this.token.value;
  }

  /** GET of a path ("/latest/meta-data"); JSON when `json`, else the IMDS text format. */
  async get(path: string, options: { json?: boolean } = {}): Promise<{ status: number; body: string }> {
    const headers: Record<string, string> = {};
    if (options.json) headers.accept = "application/json";
    if (this.o.version === "V2") headers["x-metadata-token"] = await this.sessionToken();
    try {
      const res = await request(`${this.origin}${path.startsWith("/") ? path : `/${path}`}`, {
        method: "GET",
        headers,
        dispatcher: this.dispatcher,
      });
      return { status: res.statusCode, body: await res.body.text() };
    } catch (err) {
      throw new HypervisorError(
        "ERR_VMM_API",
        `cannot reach MMDS at ${this.o.socketPath ?? this.origin}: ${messageOf(err)}`,
        { cause: err },
      );
    }
  }

  /** GET as JSON, parsed; throws on a non-200 answer. */
  async getJson(path: string): Promise<unknown> {
    const res = await this.get(path, { json: true });
    if (res.status !== 200)
      throw new HypervisorError(
        "ERR_VMM_API",
        `MMDS GET ${path} answered ${res.status}: ${res.body.trim()}`,
        { details: { status: res.status } },
      );
    return JSON.parse(res.body) as unknown;
  }

  async close(): Promise<void> {
    await this.dispatcher.close();
  }
}

/** Reads MMDS contents from a JSON file (an object), for PUT /mmds or Firecracker's --metadata. */
export async function mmdsDataFromFile(file: string): Promise<Record<string, unknown>> {
  let raw: unknown;
  try {
    raw = JSON.parse(await readFile(file, "utf8"));
  } catch (err) {
    throw new HypervisorError(
      "ERR_INVALID_ARGUMENT",
      `cannot read MMDS data from ${file}: ${messageOf(err)}`,
      { cause: err },
    );
  }
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
    throw new HypervisorError("ERR_INVALID_ARGUMENT", `MMDS data in ${file} must be a JSON object`);
  }
  return raw as Record<string, unknown>;
}
