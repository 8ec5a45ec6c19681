/**
 * The HTTP/1.1 framing of Firecracker's server (the micro-http crate), written out by hand
 * because Node's http module cannot answer like it: a status line with no reason phrase
 * ("HTTP/1.1 204 "), `Server: Firecracker API` and `Connection: keep-alive` on every answer,
 * no Date header, Content-Length framing only (no chunked bodies).
 */

export interface HttpRequest {
  method: string;
  /** The path without scheme, host or query ("/drives/rootfs"). */
  path: string;
  headers: Record<string, string>;
  /** Undefined when the request had no body (no or zero Content-Length). */
  body: Buffer | undefined;
}

/** A framing error: micro-http answers it with 400 `{"error": …}` and drops the connection. */
export interface HttpFramingError {
  error: string;
  status: number;
}

const KNOWN_METHODS = new Set([
  "GET",
  "HEAD",
  "POST",
  "PUT",
  "PATCH",
  "DELETE",
  "OPTIONS",
  "TRACE",
  "CONNECT",
]);

/** Incremental request parser for one connection. */
export class RequestParser {
  private buf = Buffer.alloc(0);
  private failed = false;

  constructor(private readonly maxPayload: number) {}

  /** Feeds bytes; returns the complete requests (and at most one framing error, which ends the stream). */
  push(chunk: Buffer): (HttpRequest | HttpFramingError)[] {
    if (this.failed) return [];
    this.buf = Buffer.concat([this.buf, chunk]);
    const out: (HttpRequest | HttpFramingError)[] = [];
    for (;;) {
      const headEnd = this.buf.indexOf("\r\n\r\n");
      if (headEnd === -1) {
        if (this.buf.length > 16 * 1024) return this.fail(out, "Request headers are too large.");
        return out;
      }
      const head = this.buf.subarray(0, headEnd).toString("latin1");
      const lines = head.split("\r\n");
      const requestLine = (lines[0] ?? "").split(" ");
      if (requestLine.length !== 3) return this.fail(out, "Invalid request line.");
      const [method = "", uri = "", version = ""] = requestLine;
      if (!KNOWN_METHODS.has(method)) return this.fail(out, `Invalid HTTP Method.`);
      if (version !== "HTTP/1.1" && version !== "HTTP/1.0")
        return this.fail(out, "Unsupported HTTP version.");
      const headers: Record<string, string> = {};
      for (const line of lines.slice(1)) {
        const colon = line.indexOf(":");
        if (colon <= 0) return this.fail(out, "Invalid header.");
        headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
      }
      if (headers["transfer-encoding"] && headers["transfer-encoding"].toLowerCase() !== "identity") {
        return this.fail(
          out,
          "Unsupported transfer encoding: only Content-Length framed bodies are accepted.",
        );
      }
      const lengthText = headers["content-length"] ?? "0";
      if (!/^\d+$/.test(lengthText)) return this.fail(out, "Invalid value for Content-Length.");
      const length = Number(lengthText);
      if (length > this.maxPayload) {
        return this.fail(
          out,
          `Request payload with size ${length} is larger than the limit of ${this.maxPayload} allowed by server.\nAll previous unanswered requests will be dropped.`,
        );
      }
      const total = headEnd + 4 + length;
      if (this.buf.length < total) return out;
      const body = length > 0 ? Buffer.from(this.buf.subarray(headEnd + 4, total)) : undefined;
      this.buf = this.buf.subarray(total);
      let path = uri.replace(/^https?:\/\/[^/]*/i, "");
      const q = path.indexOf("?");
      if (q !== -1) path = path.slice(0, q);
      if (path === "") path = "/";
      out.push({ method, path, headers, body });
    }
  }

  private fail(out: (HttpRequest | HttpFramingError)[], error: string): (HttpRequest | HttpFramingError)[] {
    this.failed = true;
    out.push({ error, status: 400 });
    return out;
  }
}

export function isFramingError(x: HttpRequest | HttpFramingError): x is HttpFramingError {
  return "error" in x;
}

/** One answer as Firecracker writes it. */
export function formatResponse(
  status: number,
  body?: string,
  extraHeaders: [string, string][] = [],
  contentType = "application/json",
): Buffer {
  const lines = [`HTTP/1.1 ${status} `, "Server: Firecracker API", "Connection: keep-alive"];
  for (const [k, v] of extraHeaders) lines.push(`${k}: ${v}`);
  if (body !== undefined) {
    lines.push(`Content-Type: ${contentType}`, `Content-Length: ${Buffer.byteLength(body)}`);
  }
  return Buffer.from(lines.join("\r\n") + "\r\n\r\n" + (body ?? ""), "utf8");
}
