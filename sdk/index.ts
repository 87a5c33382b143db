// kindling's Pulumi resources: `import * as kindling from "kindling"`.
import { join } from "node:path";
import * as pulumi from "@pulumi/pulumi";
import { dataHome } from "../provider/library/config";
import { driverModule, driverNames } from "../provider/drivers/registry";
import { attachmentProvider, imageProvider, snapshotProvider, volumeProvider } from "./providers";

/**
 * A backend, described as one entry of kindling's configuration file plus its name, e.g.
 * `{ name: "local", driver: "file", path: "/srv/volumes" }`. Secret settings given as
 * `pulumi.secret(...)` stay secret in state.
 */
export interface BackendArgs {
  name: pulumi.Input<string>;
  driver: pulumi.Input<string>;
  [setting: string]: pulumi.Input<unknown>;
}

/** Settings any driver marks secret (an RBD key...). */
const SECRET_SETTINGS = new Set(driverNames().flatMap((name) => driverModule(name)?.secretFields ?? []));

/**
 * The backend with its secret settings wrapped in `pulumi.secret`, so a key given as a plain
 * string still never reaches state in clear text. A backend given as one Output is passed as it
 * is: wrap its secrets yourself.
 */
function guarded(backend: pulumi.Input<BackendArgs>): pulumi.Input<BackendArgs> {
  if (!backend || typeof backend !== "object" || pulumi.Output.isInstance(backend) || backend instanceof Promise) return backend;
  const out: BackendArgs = { ...(backend as BackendArgs) };
  for (const key of Object.keys(out)) if (SECRET_SETTINGS.has(key) && out[key] !== undefined) out[key] = pulumi.secret(out[key]);
  // A backend's own records in a database server: its password is a secret too.
  const persistence = out.persistence as Record<string, unknown> | undefined;
  if (persistence && typeof persistence === "object" && !pulumi.Output.isInstance(persistence) && persistence.password !== undefined) {
    out.persistence = { ...persistence, password: pulumi.secret(persistence.password as string) };
  }
  return out;
}

/** The embedded default: the same `local` file backend the kindling command uses. */
export function defaultBackend(): BackendArgs {
  return { name: "local", driver: "file", path: join(dataHome(), "volumes") };
}

type Specs = pulumi.Input<Record<string, pulumi.Input<string>>>;

/**
 * Volumes, snapshots and attachments are replaced delete-first unless the program says
 * otherwise. A replacement the engine forces without asking the provider (`pulumi up
 * --replace`, the `replacementTrigger` option) would otherwise be made first: under the same
 * name, which names being unique per backend refuse; or, for an attachment, beside the old
 * connection, which the provider cannot tell from one a killed `up` left (one volume has one
 * device per host, too).
 */
function deleteFirst(opts: pulumi.CustomResourceOptions | undefined): pulumi.CustomResourceOptions {
  return { ...opts, deleteBeforeReplace: opts?.deleteBeforeReplace ?? true };
}

/** Identity of a resource in its stack; lets a create interrupted by a crash be found again. */
function owner(name: string): { resourceName: string; ownerKey: string } {
  return { resourceName: name, ownerKey: `${pulumi.getProject()}/${pulumi.getStack()}/${name}` };
}

export interface VolumeArgs {
  backend: pulumi.Input<BackendArgs>;
  /**
   * Whole GiB. Growing it extends the volume in place; it never shrinks. Optional with
   * `image`: the volume then has the size the image needs.
   */
  sizeGiB?: pulumi.Input<number>;
  /** Default: the resource name and a short stable suffix. */
  name?: pulumi.Input<string>;
  pool?: pulumi.Input<string>;
  /**
   * Create from this snapshot. It matters only at creation: a later change is recorded and
   * leaves the volume and its data as they are (to re-create it, `pulumi up --replace`).
   */
  snapshotId?: pulumi.Input<string>;
  /** Create as a clone of this volume; like snapshotId, it matters only at creation. */
  sourceVolumeId?: pulumi.Input<string>;
  extraSpecs?: Specs;
  qosSpecs?: Specs;
  metadata?: pulumi.Input<Record<string, pulumi.Input<string>>>;
  description?: pulumi.Input<string>;
  /** Name or id of an existing volume to manage as it is, without copying its data. */
  adopt?: pulumi.Input<string>;
  /**
   * Create holding this image: `SERVICE:NAME_OR_ID` (an image service of kindling's
   * configuration file: $KINDLING_CONFIG, else kindling.json in the project's directory),
   * `file:PATH` or an http(s) URL, its bytes checked against every digest offered. Another
   * image (or other digests) replaces the volume; a name is resolved when the volume is made
   * (`imageId` says which image that was). An Image of the same program:
   * `pulumi.interpolate\`glance:${image.imageId}\``.
   */
  image?: pulumi.Input<string>;
  /** The image's sha256, checked besides the digests its source offers. */
  imageSha256?: pulumi.Input<string>;
  /** The image's sha512. */
  imageSha512?: pulumi.Input<string>;
  /** Copy an image that nobody vouches for (no digest from its source or the program). */
  allowUnverifiedImage?: pulumi.Input<boolean>;
}

export class Volume extends pulumi.dynamic.Resource {
  declare readonly volumeId: pulumi.Output<string>;
  declare readonly name: pulumi.Output<string>;
  declare readonly sizeGiB: pulumi.Output<number>;
  declare readonly status: pulumi.Output<string>;
  declare readonly backendName: pulumi.Output<string>;
  declare readonly location: pulumi.Output<string>;
  declare readonly createdAt: pulumi.Output<string>;
  declare readonly pool: pulumi.Output<string | undefined>;
  declare readonly dump: pulumi.Output<Record<string, unknown>>;
  /** The id of the image the volume was made from, in its service (none for a file or a URL). */
  declare readonly imageId: pulumi.Output<string | undefined>;
  declare readonly imageService: pulumi.Output<string | undefined>;
  /** The strongest digest the image's bytes were checked against, as `algo:hex`. */
  declare readonly imageDigest: pulumi.Output<string | undefined>;
  /** Set by an update that grew the volume: what each consumer must do to see the new size (block_resize, reconnect). */
  declare readonly expansion: pulumi.Output<Record<string, unknown> | undefined>;

  constructor(name: string, args: VolumeArgs, opts?: pulumi.CustomResourceOptions) {
    super(
      volumeProvider,
      name,
      {
        volumeId: undefined, name: undefined, sizeGiB: undefined, status: undefined, backendName: undefined, location: undefined, createdAt: undefined, dump: undefined,
        imageId: undefined, imageService: undefined, imageDigest: undefined, expansion: undefined,
        ...args, backend: guarded(args.backend), ...owner(name),
      },
      deleteFirst(opts),
      "kindling",
      "Volume",
    );
  }
}

export interface SnapshotArgs {
  backend: pulumi.Input<BackendArgs>;
  volumeId: pulumi.Input<string>;
  name?: pulumi.Input<string>;
  description?: pulumi.Input<string>;
  metadata?: pulumi.Input<Record<string, pulumi.Input<string>>>;
}

export class Snapshot extends pulumi.dynamic.Resource {
  declare readonly snapshotId: pulumi.Output<string>;
  declare readonly name: pulumi.Output<string>;
  declare readonly volumeId: pulumi.Output<string>;
  declare readonly volumeSizeGiB: pulumi.Output<number>;
  declare readonly status: pulumi.Output<string>;
  declare readonly createdAt: pulumi.Output<string>;
  declare readonly dump: pulumi.Output<Record<string, unknown>>;

  constructor(name: string, args: SnapshotArgs, opts?: pulumi.CustomResourceOptions) {
    super(
      snapshotProvider,
      name,
      { snapshotId: undefined, name: undefined, volumeSizeGiB: undefined, status: undefined, createdAt: undefined, dump: undefined, ...args, backend: guarded(args.backend), ...owner(name) },
      deleteFirst(opts),
      "kindling",
      "Snapshot",
    );
  }
}

export interface AttachmentArgs {
  backend: pulumi.Input<BackendArgs>;
  volumeId: pulumi.Input<string>;
  /** `local` (file backends), `nbd` (kindling's NBD server, any backend), `rbd` (Ceph: librbd consumers, or attachLocally). */
  protocol: pulumi.Input<"local" | "nbd" | "rbd" | "iscsi">;
  connector?: pulumi.Input<Record<string, unknown>>;
  mode?: pulumi.Input<"rw" | "ro">;
  /** Make a block device on the host that runs the program (`devicePath`). */
  attachLocally?: pulumi.Input<boolean>;
}

/** Protocols whose connection info carries credentials. */
const CREDENTIAL_PROTOCOLS = ["rbd", "iscsi"];

export class Attachment extends pulumi.dynamic.Resource {
  declare readonly connectionId: pulumi.Output<string>;
  declare readonly connectionInfo: pulumi.Output<Record<string, unknown>>;
  declare readonly devicePath: pulumi.Output<string | undefined>;
  /** The libvirt <disk> for `virsh attach-device` (local, nbd, rbd). */
  declare readonly libvirtXml: pulumi.Output<string | undefined>;
  /** The libvirt <secret> an rbd disk's <auth> names; its value is connectionInfo.data.key. */
  declare readonly libvirtSecretXml: pulumi.Output<string | undefined>;
  declare readonly volumeId: pulumi.Output<string>;
  declare readonly protocol: pulumi.Output<string>;
  declare readonly dump: pulumi.Output<Record<string, unknown>>;

  constructor(name: string, args: AttachmentArgs, opts?: pulumi.CustomResourceOptions) {
    // A protocol not known yet (an Output) may turn out to carry credentials.
    const secret = typeof args.protocol !== "string" || CREDENTIAL_PROTOCOLS.includes(args.protocol);
    super(
      attachmentProvider,
      name,
      { connectionId: undefined, connectionInfo: undefined, devicePath: undefined, libvirtXml: undefined, libvirtSecretXml: undefined, dump: undefined, ...args, backend: guarded(args.backend), ...owner(name) },
      // `dump` is the connection record, which carries the connection info (and its key) too.
      deleteFirst(secret ? { ...opts, additionalSecretOutputs: [...(opts?.additionalSecretOutputs ?? []), "connectionInfo", "dump"] } : opts),
      "kindling",
      "Attachment",
    );
  }
}

export interface ImageArgs {
  /** The image service's name in kindling's configuration file; optional when it names one. */
  service?: pulumi.Input<string>;
  /** Default: the resource name and a short stable suffix. */
  name?: pulumi.Input<string>;
  /** The backend holding `volume` or `snapshot`. */
  backend?: pulumi.Input<BackendArgs>;
  /** The image's source, one of volume, snapshot, url and file; another source is another image. A volume is copied through a temporary snapshot. */
  volume?: pulumi.Input<string>;
  snapshot?: pulumi.Input<string>;
  url?: pulumi.Input<string>;
  file?: pulumi.Input<string>;
  /** The url's or file's digests, checked as the bytes pass; another digest is another image. A relative file is the project's. */
  sha256?: pulumi.Input<string>;
  sha512?: pulumi.Input<string>;
  /** Make the image from a url or file that offers no digest and was given none. */
  allowUnverified?: pulumi.Input<boolean>;
  /**
   * These change in place. Properties the program sets are kept as it says; others on the image
   * are left alone: what its source carries (kindling_volume_id...), kindling_pulumi_owner (the
   * resource it was made for), ones set by hand.
   */
  tags?: pulumi.Input<pulumi.Input<string>[]>;
  properties?: pulumi.Input<Record<string, pulumi.Input<string>>>;
  visibility?: pulumi.Input<"private" | "shared" | "community" | "public">;
  /** A protected image is never deleted: set it to false (and `pulumi up`) before destroying it. */
  protected?: pulumi.Input<boolean>;
}

/**
 * An image in an image service (Glance) of kindling's configuration, made from a volume, a
 * snapshot, an http(s) URL or a local file. The service's endpoint and credentials come from
 * the configuration file, never from the program, so nothing of them reaches the state.
 */
export class Image extends pulumi.dynamic.Resource {
  declare readonly imageId: pulumi.Output<string>;
  declare readonly name: pulumi.Output<string>;
  declare readonly serviceName: pulumi.Output<string>;
  declare readonly status: pulumi.Output<string>;
  declare readonly sizeBytes: pulumi.Output<number>;
  /** md5 of the image's bytes (Glance's checksum). */
  declare readonly checksum: pulumi.Output<string>;
  /** The service's secure hash of the bytes (os_hash_algo, os_hash_value). */
  declare readonly hashAlgo: pulumi.Output<string>;
  declare readonly hashValue: pulumi.Output<string>;
  declare readonly diskFormat: pulumi.Output<string>;
  declare readonly createdAt: pulumi.Output<string>;

  constructor(name: string, args: ImageArgs, opts?: pulumi.CustomResourceOptions) {
    const { backend, ...rest } = args;
    super(
      imageProvider,
      name,
      {
        imageId: undefined, name: undefined, serviceName: undefined, status: undefined, sizeBytes: undefined, checksum: undefined, hashAlgo: undefined, hashValue: undefined, diskFormat: undefined, createdAt: undefined,
        ...rest, ...(backend === undefined ? {} : { backend: guarded(backend) }), ...owner(name),
      },
      // Image names need not be unique: a replacement is made before the old image goes.
      opts,
      "kindling",
      "Image",
    );
  }
}
