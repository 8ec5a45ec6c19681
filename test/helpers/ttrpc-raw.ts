import { connect } from "node:net";
import { fromBinary } from "@bufbuild/protobuf";
import { ResponseSchema } from "../../src/gen/shim/ttrpc_pb.js";
import { FrameParser } from "../../src/shim/ttrpc/frame.js";

export interface RawAnswer {
  streamId: number;
  code: number;
  message: string;
}

/** Sends raw bytes to a ttrpc server on a fresh connection and returns the first `expected` answers. */
export async function rawExchange(socket: string, bytes: Buffer, expected: number): Promise<RawAnswer[]> {
  const s = connect(socket);
  const out: RawAnswer[] = [];
  try {
    await new Promise<void>((resolve, reject) => {
      const parser = new FrameParser(
        (f) => {
          const res = fromBinary(ResponseSchema, f.data);
          out.push({ streamId: f.streamId, code: res.status?.code ?? 0, message: res.status?.message ?? "" });
          if (out.length === expected) resolve();
        },
        () => reject(new Error("oversized answer")),
      );
      s.on("data", (c: Buffer) => parser.push(c));
      s.on("error", reject);
      s.write(bytes);
    });
  } finally {
    s.destroy();
  }
  return out;
}
