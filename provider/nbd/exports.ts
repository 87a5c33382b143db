import type { BlockDevice } from "../drivers/contract";

/** Something the server can serve: a volume or snapshot, opened per client connection. */
export interface ExportSource {
  /** The name clients ask for: a volume or snapshot id or name, never a path. */
  name: string;
  description?: string;
  readOnly: boolean;
  open(): Promise<BlockDevice>;
  /** QoS limits for this export (Cinder's front-end keys), if any. */
  qos?: Record<string, string>;
}

/** The exports a server offers; they can change while it runs. */
export class ExportTable {
  private readonly exports = new Map<string, ExportSource>();

  set(source: ExportSource, aliases: string[] = []): void {
    for (const name of [source.name, ...aliases]) this.exports.set(name, source);
  }

  delete(name: string): void {
    const source = this.exports.get(name);
    for (const [key, value] of this.exports) if (value === source) this.exports.delete(key);
  }

  get(name: string): ExportSource | undefined {
    return this.exports.get(name);
  }

  /** Every name clients may use, for LIST. */
  names(): string[] {
    return [...this.exports.keys()];
  }

  sources(): ExportSource[] {
    return [...new Set(this.exports.values())];
  }

  clear(): void {
    this.exports.clear();
  }
}
