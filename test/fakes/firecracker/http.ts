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

/** A framing error: micro-http answers it with 400 `{ "error": … }` (see microHttpErrorBody). */
export interface HttpFramingError {
  error: string;
  status: number;
}

/** What micro-http appends to the errors after which it drops the requests it has not answered. */
const DROPPED = "\nAll previous unanswered requests will be dropped.";

/**
 * micro-http's own error body, byte for byte as the real server writes it: spaces inside the
 * braces and the message unescaped, so a message with a newline makes a body that is not JSON.
 */
export function microHttpErrorBody(message: string): string {
  return `{ "error": "${message}" }`;
}

/** Methods micro-http parses; DELETE only in the versions that have a DELETE endpoint (1.16+). */
function supportedMethods(withDelete: boolean): Set<string> {
  return new Set(withDelete ? ["GET", "PUT", "PATCH", "DELETE"] : ["GET", "PUT", "PATCH"]);
}

/** The real server reads (and answers) an oversized body in reads of this size. */
const READ_CHUNK = 1024;

/**
 * Incremental request parser for one connection. Like micro-http, it does not drop the
 * connection after a framing error: a body over the payload limit is refused, and then every
 * 1 KiB of it that arrives is parsed as a request of its own and refused again, so a client
 * that sends one gets many answers (and a client that hangs up while they are being written
 * makes the real Firecracker take SIGPIPE; the server models that).
 */
export class RequestParser {
  private buf = Buffer.alloc(0);
  /** Bytes of an oversized body still to come (each KiB of it earns another 400). */
  private discarding = 0;
  private readonly methods: Set<string>;

  constructor(
    private readonly maxPayload: number,
    options: { deleteMethod?: boolean } = {},
  ) {
    this.methods = supportedMethods(options.deleteMethod ?? false);
  }

  /** Feeds bytes; returns the complete requests and the framing errors, in order. */
  push(chunk: Buffer): (HttpRequest | HttpFramingError)[] {
    const out: (HttpRequest | HttpFramingError)[] = [];
    if (this.discarding > 0) {
      const taken = Math.min(this.discarding, chunk.length);
      this.discarding -= taken;
      for (let i = 0; i < Math.ceil(taken / READ_CHUNK); i++)
        out.push({ error: `Invalid header. Reason: Invalid value for header.${DROPPED}`, status: 400 });
      chunk = chunk.subarray(taken);
    }
    this.buf = Buffer.concat([this.buf, chunk]);
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
      if (!this.methods.has(method))
        return this.fail(out, `Invalid HTTP Method: Unsupported HTTP method.${DROPPED}`);
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
        const rest = Buffer.from(this.buf.subarray(headEnd + 4));
        this.fail(
          out,
          `Request payload with size ${length} is larger than the limit of ${this.maxPayload} allowed by server.${DROPPED}`,
        );
        // The body that follows is read (and refused) in chunks, not skipped.
        this.discarding = length;
        out.push(...this.push(rest));
        return out;
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

  /** Answers a framing error; what was buffered is dropped, as micro-http drops unanswered requests. */
  private fail(out: (HttpRequest | HttpFramingError)[], error: string): (HttpRequest | HttpFramingError)[] {
    this.buf = Buffer.alloc(0);
    out.push({ error, status: 400 });
    return out;
  }
}

export function isFramingError(x: HttpRequest | HttpFramingError): x is HttpFramingError {
  return "error" in x;
}

/**
 * The answer to an 11th simultaneous connection, written at connect time before any request:
 * no reason phrase and no trailing space on the status line, `Connection: close`, no
 * Content-Type (as observed on 1.0 to 1.14).
 */
export function tooManyConnectionsResponse(): Buffer {
  const body = microHttpErrorBody("Too many open connections");
  return Buffer.from(
    [
      "HTTP/1.1 503",
      "Server: Firecracker API",
      "Connection: close",
      `Content-Length: ${Buffer.byteLength(body)}`,
      "",
      body,
    ].join("\r\n"),
    "utf8",
  );
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
