import { setTimeout as sleep } from "node:timers/promises";

/** How many times a transaction the server aborted (a deadlock) is run in all. */
export const RETRIES = 10;

/**
 * Waits before the next try of a transaction the server aborted to break a deadlock: longer
 * each time and at random, so two hosts that collided do not collide again in step.
 */
export function backOff(attempt: number): Promise<void> {
  return sleep(Math.random() * Math.min(200, 5 * 2 ** attempt));
}
