import type { Context } from "../context";
import { NAME_COLUMN_WIDTH, table } from "../output";

/** kindling stats [--refresh]: Cinder-style stats, per pool. */
export async function stats(ctx: Context): Promise<void> {
  const backend = ctx.backend();
  const s = await backend.stats(ctx.values.refresh ?? false);
  ctx.out.result(s, () =>
    `backend ${s.volume_backend_name} (${s.vendor_name} ${s.storage_protocol} driver ${s.driver_version})\n` +
    table(
      ["POOL", "TOTAL GiB", "FREE GiB", "PROVISIONED GiB", "VOLUMES", "THIN", "OVERSUB"],
      s.pools.map((p) => [p.pool_name, p.total_capacity_gb, p.free_capacity_gb, p.provisioned_capacity_gb, p.total_volumes, String(p.thin_provisioning_support), p.max_over_subscription_ratio]),
      { maxWidths: { POOL: NAME_COLUMN_WIDTH } },
    ));
}
