import type { Backend } from "../../provider/library";
import type { Lease } from "../../provider/persistence/records";
import { GiB } from "../../provider/util/sizes";
import { processState } from "../../provider/util/owner";
import type { CephCluster } from "./ceph";

interface ListedImage {
  image: string;
  size: number;
  /** Set on the entries `rbd ls -l` gives for snapshots. */
  snapshot?: string;
}

interface ListedSnapshot {
  name: string;
  size: number;
}

/** Snapshots the rbd driver takes of a source to clone it (`clone-<clone id>`): no record names them. */
const CLONE_SNAPSHOT = /^clone-/;

/**
 * Everything that is wrong between an rbd backend's records and its Ceph pool, as sentences (an
 * empty list when they agree), what recordsVersusStorage is for a file backend: every volume
 * record has its image (`rbd ls -l`) at the recorded size and every `volume-` image its record,
 * every snapshot record its RBD snapshot on its volume's image (`rbd snap ls`) at the recorded
 * size and every `snapshot-` snapshot its record, nothing is left mid-operation or leased.
 */
export async function rbdRecordsVersusStorage(backend: Backend, cluster: CephCluster, cephPool = "volumes"): Promise<string[]> {
  const problems: string[] = [];
  const volumes = await backend.persistence.getVolumes({ backend: backend.name });
  const snapshots = await backend.persistence.getSnapshots({ backend: backend.name });
  const listed = cluster.rbdJson<ListedImage[]>(["ls", "-l", cephPool]);
  const images = new Map(listed.filter((i) => i.snapshot === undefined && i.image.startsWith("volume-")).map((i) => [i.image, i.size]));
  const snapsOf = new Map<string, ListedSnapshot[]>();
  for (const image of images.keys()) snapsOf.set(image, cluster.rbdJson<ListedSnapshot[]>(["snap", "ls", `${cephPool}/${image}`]));

  for (const v of volumes) {
    const image = `volume-${v.id}`;
    if (!images.has(image)) problems.push(`volume ${v.name} (${v.status}): no image`);
    else if (images.get(image) !== v.sizeGiB * GiB) problems.push(`volume ${v.name}: record ${v.sizeGiB} GiB, image ${images.get(image)} bytes`);
    if (["creating", "extending", "deleting"].includes(v.status)) problems.push(`volume ${v.name} left ${v.status}`);
    if (liveLease(v.lease)) problems.push(`volume ${v.name} still leased (${v.lease?.operation})`);
    images.delete(image);
  }
  for (const image of images.keys()) problems.push(`image ${image}: no record knows it`);

  const recorded = new Set<string>();
  for (const s of snapshots) {
    const image = `volume-${s.volumeId}`;
    const name = `snapshot-${s.id}`;
    recorded.add(`${image}@${name}`);
    const found = snapsOf.get(image)?.find((snap) => snap.name === name);
    if (!found) problems.push(`snapshot ${s.name} (${s.status}): no RBD snapshot ${image}@${name}`);
    else if (found.size !== s.volumeSizeGiB * GiB) problems.push(`snapshot ${s.name}: record ${s.volumeSizeGiB} GiB, RBD snapshot ${found.size} bytes`);
    if (["creating", "deleting"].includes(s.status)) problems.push(`snapshot ${s.name} left ${s.status}`);
    if (liveLease(s.lease)) problems.push(`snapshot ${s.name} still leased (${s.lease?.operation})`);
    if (!volumes.some((v) => v.id === s.volumeId)) problems.push(`snapshot ${s.name}: its volume is gone`);
  }
  for (const [image, snaps] of snapsOf) {
    for (const snap of snaps) {
      if (!CLONE_SNAPSHOT.test(snap.name) && !recorded.has(`${image}@${snap.name}`)) problems.push(`RBD snapshot ${image}@${snap.name}: no record knows it`);
    }
  }
  return problems;
}

/**
 * A lease on a record once every operation has ended: one a dead process of this host left is
 * no problem (the next operation takes it over), any other is (a host's counts until it is stale).
 */
function liveLease(lease: Lease | undefined): boolean {
  return lease !== undefined && processState(lease.owner) !== "dead";
}
