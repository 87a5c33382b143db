/**
 * Outputs as plain JSON. The provider host encodes outputs as protobuf Structs, which refuse
 * `undefined` ("Unexpected struct type"), so keys without a value are dropped here.
 */
export function plain<T>(value: T): T {
  return JSON.parse(JSON.stringify(value)) as T;
}
