/**
 * The guest-facing side of MMDS (firecracker-api.md §8), which a real guest reaches over its
 * network interface at 169.254.169.254. The fake has no guest network, so with FAKE_FC_MMDS_GUEST=1
 * it serves the same HTTP protocol on the unix socket `<api socket>.mmds` (a fake-only
 * extension, used to test the SDK's guest-side MMDS client):
 * - V1: GET <json pointer>;
 * - V2: PUT /latest/api/token with X-metadata-token-ttl-seconds (1..21600) returns a token;
 *   GET needs X-metadata-token (401 when missing, unknown or expired);
 * - Accept: application/json returns JSON, anything else the IMDS text format;
 * - 404 for a missing key, 405 for other methods, 400 for X-Forwarded-For on the token PUT.
 */
import { randomBytes } from "node:crypto";
import net from "node:net";
import { RequestParser, isFramingError, type HttpRequest } from "./http.js";

type Obj = Record<string, unknown>;

function imds(value: unknown): string | undefined {
  if (typeof value === "string") return value;
  if (typeof value === "object" && value !== null && !Array.isArray(value)) {
    return Object.entries(value)
      .map(([k, v]) => (typeof v === "object" && v !== null ? `${k}/` : k))
      .join("\n");
  }
  return undefined;
}

function answer(status: number, body: string, contentType: string, extra: [string, string][] = []): Buffer {
  const reasons: Record<number, string> = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
  };
  const head = [
    `HTTP/1.1 ${status} ${reasons[status] ?? ""}`,
    `Content-Type: ${contentType}`,
    `Content-Length: ${Buffer.byteLength(body)}`,
    ...extra.map(([k, v]) => `${k}: ${v}`),
  ];
  return Buffer.from(head.join("\r\n") + "\r\n\r\n" + body);
}

export function startMmdsGuestEndpoint(
  socketPath: string,
  view: () => { config: Obj | undefined; data: Obj },
  booted: () => boolean,
): net.Server {
  const tokens = new Map<string, number>();
  const handle = (req: HttpRequest): Buffer => {
    const { config, data } = view();
    if (!booted() || !config) return answer(404, "Not found.", "text/plain");
    const v2 = config.version === "V2";
    if (req.method === "PUT" && req.path === "/latest/api/token") {
      if (req.headers["x-forwarded-for"])
        return answer(
          400,
          "Invalid header. Reason: Unsupported header name. Key: X-Forwarded-For",
          "text/plain",
        );
      const ttl = Number(
        req.headers["x-metadata-token-ttl-seconds"] ?? req.headers["x-aws-ec2-metadata-token-ttl-seconds"],
      );
      if (!Number.isInteger(ttl) || ttl < 1 || ttl > 21600)
        return answer(400, "Invalid time to live value provided for token", "text/plain");
      const token = randomBytes(32).toString("base64");
      tokens.set(token, Date.now() + ttl * 1000);
      return answer(200, token, "text/plain", [["X-metadata-token-ttl-seconds", String(ttl)]]);
    }
    if (req.method !== "GET")
      return answer(405, "Not allowed HTTP method.", "text/plain", [["Allow", "GET, PUT"]]);
    const token = req.headers["x-metadata-token"] ?? req.headers["x-aws-ec2-metadata-token"];
    const expires = token ? tokens.get(token) : undefined;
    if (v2 && (expires === undefined || expires < Date.now()))
      return answer(401, "Invalid or expired token.", "text/plain");
    let node: unknown = data;
    for (const part of req.path.split("/").filter(Boolean)) {
      node =
        typeof node === "object" && node !== null
          ? (node as Obj)[decodeURIComponent(part).replace(/~1/g, "/").replace(/~0/g, "~")]
          : undefined;
    }
    if (node === undefined) return answer(404, "Resource not found: " + req.path + ".", "text/plain");
    const json = req.headers["accept"] === "application/json" && config.imds_compat !== true;
    if (json) return answer(200, JSON.stringify(node), "application/json");
    const text = imds(node);
    return text === undefined
      ? answer(400, "Cannot retrieve value. The value has an invalid format.", "text/plain")
      : answer(200, text, "text/plain");
  };
  const server = net.createServer((sock) => {
    sock.on("error", () => undefined);
    const parser = new RequestParser(51200);
    sock.on("data", (chunk: Buffer) => {
      for (const item of parser.push(chunk)) {
        if (isFramingError(item)) sock.end(answer(400, item.error, "text/plain"));
        else sock.write(handle(item));
      }
    });
  });
  server.on("error", () => undefined);
  server.listen(socketPath);
  server.unref();
  return server;
}
