import { connect, type Socket } from "node:net";

/** A QMP client over qemu's unix socket: one command at a time, events kept for waiting on. */
export class Qmp {
  private buffer = "";
  private waiting?: { resolve: (v: Record<string, any>) => void };
  readonly events: Array<Record<string, any>> = [];

  private constructor(private readonly socket: Socket) {
    socket.setEncoding("utf8").on("data", (chunk: string) => {
      this.buffer += chunk;
      let nl: number;
      while ((nl = this.buffer.indexOf("\n")) >= 0) {
        const line = this.buffer.slice(0, nl).trim();
        this.buffer = this.buffer.slice(nl + 1);
        if (!line) continue;
        const message = JSON.parse(line) as Record<string, any>;
        if (message.event) this.events.push(message);
        else if (this.waiting && ("return" in message || "error" in message || "QMP" in message)) {
          const w = this.waiting;
          this.waiting = undefined;
          w.resolve(message);
        }
      }
    });
  }

  static async open(path: string): Promise<Qmp> {
    for (let i = 0; ; i++) {
      try {
        const socket = await new Promise<Socket>((resolve, reject) => {
          const s = connect(path, () => resolve(s));
          s.once("error", reject);
        });
        const qmp = new Qmp(socket);
        await qmp.next(); // the greeting
        const caps = await qmp.send("qmp_capabilities");
        if (caps.error) throw new Error(`qmp_capabilities: ${JSON.stringify(caps.error)}`);
        return qmp;
      } catch (err) {
        if (i >= 100) throw err;
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  }

  private next(): Promise<Record<string, any>> {
    return new Promise((resolve) => (this.waiting = { resolve }));
  }

  /** The reply: `{ return }` or `{ error: { class, desc } }`. */
  send(execute: string, args?: Record<string, unknown>): Promise<Record<string, any>> {
    const reply = this.next();
    this.socket.write(`${JSON.stringify({ execute, ...(args ? { arguments: args } : {}) })}\n`);
    return reply;
  }

  /** As send, failing on an error reply. */
  async run(execute: string, args?: Record<string, unknown>): Promise<unknown> {
    const reply = await this.send(execute, args);
    if (reply.error) throw new Error(`${execute}: ${reply.error.desc}`);
    return reply.return;
  }

  close(): void {
    this.socket.destroy();
  }
}
