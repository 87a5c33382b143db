// Tells a create after a crash from a replacement made while the old resource still exists.
//
// A create first looks for what an interrupted create of the same resource made: the owner key
// (project/stack/resource) names it before it is made, so after a kill -9 of `pulumi up` the
// next create takes it up instead of making a second one. A replacement has the same owner key,
// though, and when it is made before the old resource is deleted (`deleteBeforeReplace: false`)
// the owner key names the old object, which the engine deletes right after: handing that back
// would have the engine delete (or disconnect) what it was just given.
//
// Pulumi runs every call of one deployment in one dynamic-provider process, and what the state
// holds reaches it before the create of the same resource: check gets the old inputs, diff the
// old id and outputs. That is what this remembers, one instance per kind of resource. A
// replacement the engine forces without asking (`pulumi up --replace`) tells the provider
// nothing (check without old inputs, no diff): its create looks like the one after a crash and
// takes up the old object, so the engine's delete of the old resource, in the same deployment,
// must then leave that object to the new one. Only in the same deployment: should the `up` stop
// between that create and that delete, the next `up` deletes the old resource in a new process,
// which knows nothing of it.

import { ConflictError } from "../util/errors";

/** What the state held for one resource, as check and diff saw it. */
interface Held<Inputs> {
  id?: string;
  inputs: Partial<Inputs>;
}

export class Replacements<Inputs extends object, Made extends { id: string }> {
  /** By owner key: what the engine's state holds for each resource of this deployment. */
  private readonly inState = new Map<string, Held<Inputs>>();
  /** Objects a create of this deployment took up (an interrupted create's, or one it adopts), with its owner key. */
  private readonly takenUp = new Map<string, string | undefined>();

  /**
   * `isFor(made, oldInputs)`: whether `made` is the object the old inputs describe, for when the
   * state's id is not known (diff is skipped for a replacement the engine forces, such as a
   * `replacementTrigger` change, `replaceWith` or `deletedWith`).
   */
  constructor(private readonly isFor: (made: Made, oldInputs: Partial<Inputs>) => boolean) {}

  /** From check: the old inputs (none for a new resource, nor for a replacement checked again). */
  checked(ownerKey: unknown, olds: Partial<Inputs>): void {
    this.note(ownerKey, { inputs: olds });
  }

  /** From diff: the id and the old outputs (which carry the inputs) the state holds. */
  diffed(ownerKey: unknown, id: string, olds: Partial<Inputs>): void {
    this.note(ownerKey, { id, inputs: olds });
  }

  private note(ownerKey: unknown, seen: Held<Inputs>): void {
    if (typeof ownerKey === "string" && Object.keys(seen.inputs).length) this.inState.set(ownerKey, { ...this.inState.get(ownerKey), ...seen });
  }

  /** Whether `made`, what the owner key names, is what the state holds for this resource (so no leftover of a crash). */
  heldByState(ownerKey: string | undefined, made: Made): boolean {
    const held = ownerKey === undefined ? undefined : this.inState.get(ownerKey);
    if (!held) return false;
    return held.id !== undefined ? held.id === made.id : this.isFor(made, held.inputs);
  }

  /** A create of the resource `ownerKey` names takes up `id` (what an interrupted create left, or an existing object it adopts). */
  tookUp(id: string, ownerKey: string | undefined): void {
    this.takenUp.set(id, ownerKey);
  }

  /**
   * For the delete of a resource holding `id`: when a create of this deployment took it up, the
   * owner key of that create (the delete leaves the object alone, once); else undefined. The
   * create's owner key tells whether the owner record is the new resource's too (a replacement)
   * or still the deleted one's (another resource adopted the object).
   */
  handedOver(id: string): { ownerKey: string | undefined } | undefined {
    if (!this.takenUp.has(id)) return undefined;
    const ownerKey = this.takenUp.get(id);
    this.takenUp.delete(id);
    return { ownerKey };
  }
}

/**
 * A replacement made before the old object is deleted cannot have its name: names are unique
 * per backend. Refused before anything is made or deleted.
 */
export function nameHeldByReplaced(kind: "volume" | "snapshot", resource: "Volume" | "Snapshot", name: string): ConflictError {
  return new ConflictError(
    `the ${kind} named ${JSON.stringify(name)} belongs to the ${resource} this one replaces, which is deleted only after this one is made (resource option deleteBeforeReplace: false), and names are unique per backend`,
    { field: "name", hint: `set the resource option \`deleteBeforeReplace: true\` on the ${resource}, so that the old one (and its data) goes first, or give the new one another \`name\`` },
  );
}
