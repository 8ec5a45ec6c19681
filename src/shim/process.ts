import { Status } from "../gen/shim/github.com/containerd/containerd/api/types/task/task_pb.js";
import type { ProcessIo } from "./stdio.js";
import type { GuestProcess } from "./vm.js";

export interface StdioPaths {
  stdin: string;
  stdout: string;
  stderr: string;
  terminal: boolean;
}

/**
 * One containerd process (the init, exec id "", or an exec): its stdio, state and exit.
 * `exited` resolves only once the guest process ended **and** every output byte reached the
 * client's FIFOs with the write ends closed — Wait and TaskExit both wait for it.
 */
export class ShimProcess {
  status: Status = Status.CREATED;
  exitStatus = 0;
  exitedAt: Date | undefined;
  guest: GuestProcess | undefined;
  private resolveExit!: () => void;
  readonly exited: Promise<void>;

  constructor(
    readonly execId: string,
    readonly stdio: StdioPaths,
    readonly io: ProcessIo,
  ) {
    this.exited = new Promise((r) => (this.resolveExit = r));
  }

  /** Follows a started guest process; `onExit` runs after output drained, before waiters wake. */
  follow(guest: GuestProcess, onExit: (p: ShimProcess) => Promise<void>): void {
    this.guest = guest;
    this.status = Status.RUNNING;
    const drained = this.io.pump(guest);
    void Promise.all([guest.wait(), drained])
      .then(
        ([exit]) => exit.exitCode,
        () => 255,
      )
      .then(async (code) => {
        this.finish(code);
        await onExit(this).catch(() => undefined);
        this.resolveExit();
      });
  }

  /** A process that ends without having run (killed while created, or its start failed). */
  async abandon(code: number): Promise<void> {
    await this.io.close();
    this.finish(code);
    this.resolveExit();
  }

  private finish(code: number): void {
    this.exitStatus = code;
    this.exitedAt = new Date();
    this.status = Status.STOPPED;
  }
}

/** containerd sends signal numbers; the agent takes names (shared with cocoon-runtime). */
export { signalName } from "../oci/signals.js";
