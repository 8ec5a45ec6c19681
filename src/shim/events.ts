import { create, type DescMessage, type MessageInitShape } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import { ForwardRequestSchema } from "../gen/shim/github.com/containerd/containerd/api/services/ttrpc/events/v1/events_pb.js";
import type { Logger } from "pino";
import { TtrpcClient } from "./ttrpc/client.js";
import { toBinary } from "@bufbuild/protobuf";

const SERVICE = "containerd.services.events.ttrpc.v1.Events";
const CALL_TIMEOUT_MS = 5000;
const MAX_ATTEMPTS = 5;

/**
 * Forwards task events to containerd (TTRPC_ADDRESS) one at a time, in the order they were
 * published — the runtime-v2 contract's create → start → exit → delete ordering follows from
 * the order the task service publishes them. A failed forward is retried with a growing delay
 * (as containerd's own publisher does) before the next event goes out.
 */
export class EventPublisher {
  private chain: Promise<void> = Promise.resolve();
  private client: TtrpcClient | undefined;

  constructor(
    private readonly address: string | undefined,
    private readonly namespace: string,
    private readonly logger: Logger,
  ) {}

  publish<D extends DescMessage>(topic: string, schema: D, event: MessageInitShape<D>): Promise<void> {
    const envelope = create(ForwardRequestSchema, {
      envelope: {
        timestamp: timestampNow(),
        namespace: this.namespace,
        topic,
        // containerd's typeurl uses the bare full name for these messages.
        event: { typeUrl: schema.typeName, value: toBinary(schema, create(schema, event)) },
      },
    });
    const payload = toBinary(ForwardRequestSchema, envelope);
    this.chain = this.chain.then(() => this.forward(topic, payload));
    return this.chain;
  }

  /** Resolves once every queued event was forwarded (or given up on). */
  flush(): Promise<void> {
    return this.chain;
  }

  close(): void {
    this.client?.close();
    this.client = undefined;
  }

  private async forward(topic: string, payload: Uint8Array): Promise<void> {
    if (!this.address) return;
    for (let attempt = 1; attempt <= MAX_ATTEMPTS; attempt++) {
      try {
        this.client ??= await TtrpcClient.open(this.address);
        await this.client.callRaw(SERVICE, "Forward", payload, CALL_TIMEOUT_MS);
        this.logger.debug({ topic }, "event forwarded");
        return;
      } catch (err) {
        this.client?.close();
        this.client = undefined;
        this.logger.warn({ topic, attempt, err: (err as Error).message }, "event forward failed");
        await new Promise((r) => setTimeout(r, 1000 * attempt));
      }
    }
    this.logger.error({ topic }, "event dropped after retries");
  }
}
