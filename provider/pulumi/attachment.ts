import type { Backend, BackendConfig } from "../library/backend";
import type { Connection } from "../library/connection";
import { NotFoundError } from "../util/errors";
import { localConnector, stillAttached } from "../exports/local";
import { plain } from "./plain";
import { backendFor } from "./backends";
import { checkBackend, checkProperties, checkWith } from "./check";
import { changedIn, replacedBy } from "./diffs";
import { attachmentInputsSchema, isUnknown, type AttachmentInputs } from "./inputs";

export interface AttachmentOutputs extends AttachmentInputs {
  connectionId: string;
  connectionInfo: Record<string, unknown>;
  devicePath?: string;
  dump: Record<string, unknown>;
}

const INPUT_KEYS = Object.keys(attachmentInputsSchema.shape);

function outputs(inputs: AttachmentInputs, connection: Connection): AttachmentOutputs {
  return plain({
    ...inputs,
    connectionId: connection.id,
    connectionInfo: connection.connectionInfo as unknown as Record<string, unknown>,
    devicePath: connection.devicePath,
    dump: connection.dump() as unknown as Record<string, unknown>,
  });
}

function backendOf(config: unknown): Promise<Backend> {
  return backendFor(config as BackendConfig);
}

async function findConnection(backend: Backend, volumeId: string, id: string): Promise<Connection | undefined> {
  return (await backend.connections(volumeId)).find((c) => c.id === id);
}

export async function check(_olds: Partial<AttachmentInputs>, news: Record<string, unknown>) {
  const failures = checkProperties(attachmentInputsSchema, news);
  const inputs = { ...news } as AttachmentInputs;
  const backend = checkBackend(inputs.backend, failures);
  const known = (v: unknown) => !isUnknown(v);
  if (backend && known(inputs.protocol) && known(inputs.connector) && !failures.length) {
    checkWith("connector", failures, () => backend.validateConnector(inputs.protocol, inputs.connector ?? {}));
  }
  return { inputs, failures };
}

/** Any change makes a new attachment; the old one is detached first. */
export async function diff(_id: string, olds: AttachmentOutputs, news: AttachmentInputs) {
  const keys = ["volumeId", "protocol", "connector", "mode", "attachLocally"] as const;
  const replaces = replacedBy(olds, news, [...keys]);
  return {
    changes: replaces.length > 0 || changedIn(olds, news, [...keys, "backend"]),
    replaces,
    // Only backend settings such as credentials change in place, and the connection stays.
    stables: replaces.length ? [] : ["connectionId"],
    deleteBeforeReplace: true,
  };
}

export async function create(inputs: AttachmentInputs): Promise<{ id: string; outs: AttachmentOutputs }> {
  const backend = await backendOf(inputs.backend);
  const volume = await backend.getVolume(inputs.volumeId);
  const connector = inputs.connector ?? (inputs.attachLocally ? localConnector() : {});
  const connection = await volume.connect(inputs.protocol, connector, { attachMode: inputs.mode ?? "rw" });
  if (inputs.attachLocally) {
    try {
      await connection.attach();
    } catch (err) {
      await connection.disconnect().catch(() => undefined);
      throw err;
    }
  }
  return { id: connection.id, outs: outputs(inputs, connection) };
}

/** The connection record and, when attached, the device still bound to the volume. */
export async function read(id: string, props: AttachmentOutputs) {
  const backend = await backendOf(props.backend);
  const connection = await findConnection(backend, props.volumeId, id);
  if (!connection) return {};
  const outs = outputs(props, connection);
  if (connection.devicePath && !(await stillAttached(connection.connectionInfo, connection.devicePath).catch(() => false))) {
    outs.devicePath = undefined;
  }
  const inputs = Object.fromEntries(INPUT_KEYS.filter((k) => k in outs).map((k) => [k, outs[k as keyof AttachmentOutputs]]));
  return { id, props: plain(outs), inputs: plain(inputs) };
}

export async function update(id: string, _olds: AttachmentOutputs, news: AttachmentInputs) {
  const backend = await backendOf(news.backend);
  const connection = await findConnection(backend, news.volumeId, id);
  if (!connection) throw new NotFoundError("connection", id);
  return { outs: outputs(news, connection) };
}

export async function remove(id: string, props: AttachmentOutputs): Promise<void> {
  const backend = await backendOf(props.backend);
  const connection = await findConnection(backend, props.volumeId, id);
  if (connection) await connection.disconnect();
}
