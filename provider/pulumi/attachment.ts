import { isDeepStrictEqual } from "node:util";
import type { Backend, BackendConfig } from "../library/backend";
import type { Connection } from "../library/connection";
import { InUseError, KindlingError, NotFoundError } from "../util/errors";
import { newId } from "../util/ids";
import { localConnector, stillAttached } from "../attach";
import { libvirtDiskXml, libvirtSecretXml } from "../library/libvirt-xml";
import { plain } from "./plain";
import { backendFor } from "./backends";
import { checkBackend, checkProperties, checkWith } from "./check";
import { changedIn, replacedBy } from "./diffs";
import { attachmentInputsSchema, isUnknown, type AttachmentInputs } from "./inputs";
import { forgetOwner, ownedId, recordOwner } from "./ownership";
import { Replacements } from "./replacements";

export interface AttachmentOutputs extends AttachmentInputs {
  connectionId: string;
  /** Cinder's shape: { driver_volume_type, data }. */
  connectionInfo: Record<string, unknown>;
  devicePath?: string;
  /** The libvirt <disk> for `virsh attach-device` (local, nbd, rbd). */
  libvirtXml?: string;
  /** The libvirt <secret> an rbd disk's <auth> names (its value: `data.key`). */
  libvirtSecretXml?: string;
  dump: Record<string, unknown>;
}

const INPUT_KEYS = Object.keys(attachmentInputsSchema.shape);

/** The outputs, with the connection info as it is now (an NBD export where its server serves it). */
async function outputs(inputs: AttachmentInputs, connection: Connection): Promise<AttachmentOutputs> {
  const info = await connection.currentInfo();
  let disk: string | undefined;
  try {
    disk = libvirtDiskXml(info);
  } catch {
    disk = undefined; // a protocol libvirt has no disk for
  }
  return plain({
    ...inputs,
    connectionId: connection.id,
    connectionInfo: info as unknown as Record<string, unknown>,
    devicePath: connection.devicePath,
    libvirtXml: disk,
    libvirtSecretXml: libvirtSecretXml(info),
    dump: connection.dump() as unknown as Record<string, unknown>,
  });
}

function backendOf(config: unknown): Promise<Backend> {
  return backendFor(config as BackendConfig);
}

async function findConnection(backend: Backend, volumeId: string, id: string): Promise<Connection | undefined> {
  return (await backend.connections(volumeId)).find((c) => c.id === id);
}

/** The connection the inputs ask for: protocol, connector and mode as the library records them. */
function wanted(inputs: Partial<AttachmentInputs>) {
  return {
    volumeId: inputs.volumeId,
    protocol: inputs.protocol,
    connector: inputs.connector ?? (inputs.attachLocally ? localConnector() : {}),
    attachMode: inputs.mode ?? "rw",
  };
}

/** Whether `connection` is the connection `inputs` describe (whatever its device). */
function isFor(connection: Connection, inputs: Partial<AttachmentInputs>): boolean {
  const want = wanted(inputs);
  return connection.volumeId === want.volumeId && connection.snapshotId === undefined && connection.protocol === want.protocol
    && connection.attachMode === want.attachMode && isDeepStrictEqual(connection.connector, want.connector);
}

/** Whether `connection` is all that `inputs` ask for: the connection and, with attachLocally, a device here that still serves it. */
async function serves(connection: Connection, inputs: AttachmentInputs): Promise<boolean> {
  if (!isFor(connection, inputs) || connection.busy) return false;
  if (!inputs.attachLocally) return !connection.attached;
  const device = connection.devicePath;
  return connection.attachedHere && device !== undefined && (await stillAttached(connection.connectionInfo, device).catch(() => false));
}

/**
 * Tells a create after a crash from a replacement made while the old attachment still exists
 * (`deleteBeforeReplace: false`): the connection the owner key names is then the old one, which
 * the engine deletes next; handing it back would have the engine disconnect the connection it
 * was just given. Without the state's id, the old inputs tell which connection it holds.
 */
const replacements = new Replacements<AttachmentInputs, Connection>((connection, olds) => isFor(connection, olds));

export async function check(olds: Partial<AttachmentInputs>, news: Record<string, unknown>) {
  replacements.checked(news.ownerKey, olds);
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
export async function diff(id: string, olds: AttachmentOutputs, news: AttachmentInputs) {
  replacements.diffed(news.ownerKey ?? olds.ownerKey, id, olds);
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

/**
 * Connects (and attaches), or takes up what an interrupted create of this resource made: the
 * owner key names the connection before it is made, so after a kill -9 of `pulumi up` the
 * next create finds it. It is taken up when it is still all the inputs ask for, and
 * disconnected (its device released) otherwise, so that no connection is left that the state
 * does not hold.
 */
export async function create(inputs: AttachmentInputs): Promise<{ id: string; outs: AttachmentOutputs }> {
  const backend = await backendOf(inputs.backend);
  const volume = await backend.getVolume(inputs.volumeId);
  // Finishes or rolls back what a dead holder left (a connection whose attach was cut short).
  await volume.settle();
  const previous = await ownedId(backend, "attachment", inputs.ownerKey);
  const left = previous === undefined ? undefined : (await backend.connections()).find((c) => c.id === previous);
  const replacing = left !== undefined && replacements.heldByState(inputs.ownerKey, left) ? left : undefined;
  if (left && !replacing) {
    if ((await left.settle()) && (await serves(left, inputs))) {
      replacements.tookUp(left.id, inputs.ownerKey);
      return { id: left.id, outs: await outputs(inputs, left) };
    }
    await left.disconnect(); // half made, or made for other inputs, when the last run was killed
  }
  const { protocol, connector, attachMode } = wanted(inputs);
  const id = newId();
  await recordOwner(backend, "attachment", inputs.ownerKey, id);
  let connection: Connection | undefined;
  try {
    connection = await volume.connect(protocol as string, connector, { attachMode, id });
    if (inputs.attachLocally) await connection.attach();
  } catch (err) {
    const made = connection ?? (await backend.connections(volume.id)).find((c) => c.id === id);
    await made?.disconnect().catch(() => undefined);
    // Still there (the disconnect failed): the owner key keeps naming it, so the next create
    // disconnects it again. Else it names again what the state holds, if anything.
    if (!(await backend.connections(volume.id)).some((c) => c.id === id)) {
      if (replacing) await recordOwner(backend, "attachment", inputs.ownerKey, replacing.id);
      else await forgetOwner(backend, "attachment", inputs.ownerKey, id);
    }
    throw replacing ? explainReplacement(err, volume.name, replacing) : err;
  }
  return { id: connection.id, outs: await outputs(inputs, connection) };
}

/**
 * A replacement made first can never attach locally: the attachment it replaces still holds
 * the volume's device on this host, and one volume has one device per host.
 */
function explainReplacement(err: unknown, volumeName: string, replacing: Connection): unknown {
  const device = replacing.attachedHere ? replacing.devicePath : undefined;
  if (!(err instanceof InUseError) || !device || !err.message.includes(device)) return err;
  return new KindlingError("IN_USE", `volume ${volumeName} is attached on this host at ${device} by the Attachment this one replaces, which is deleted only after this one is made`, {
    hint: "set the resource option `deleteBeforeReplace: true` on the Attachment, so that the old one goes first",
    cause: err,
  });
}

/** The connection record and, when attached, the device still bound to the volume. */
export async function read(id: string, props: AttachmentOutputs) {
  const backend = await backendOf(props.backend);
  const connection = await findConnection(backend, props.volumeId, id);
  if (!connection) return {};
  const outs = await outputs(props, connection);
  if (connection.devicePath && !(await stillAttached(connection.connectionInfo, connection.devicePath).catch(() => false))) {
    outs.devicePath = undefined;
  }
  const inputs = Object.fromEntries(INPUT_KEYS.filter((k) => k in outs).map((k) => [k, outs[k as keyof AttachmentOutputs]]));
  return { id, props: plain(outs), inputs: plain(inputs) };
}

export async function update(id: string, _olds: AttachmentOutputs, news: AttachmentInputs) {
  const backend = await backendOf(news.backend);
  const connection = await findConnection(backend, news.volumeId, id);
  if (!connection) {
    throw new NotFoundError("connection", id, { hint: "it was disconnected outside Pulumi; `pulumi refresh` drops it from the state, and the next `pulumi up` connects again" });
  }
  return { outs: await outputs(news, connection) };
}

export async function remove(id: string, props: AttachmentOutputs): Promise<void> {
  const backend = await backendOf(props.backend);
  // The old resource of a replacement whose create took up this very connection (see replacements.ts).
  const handed = replacements.handedOver(id);
  if (handed) {
    if (handed.ownerKey !== props.ownerKey) await forgetOwner(backend, "attachment", props.ownerKey, id);
    return;
  }
  const connection = await findConnection(backend, props.volumeId, id);
  if (connection) await connection.disconnect();
  await forgetOwner(backend, "attachment", props.ownerKey, id);
}
