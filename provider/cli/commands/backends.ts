import type { Context } from "../context";
import { NAME_COLUMN_WIDTH, table } from "../output";

/** kindling backends: what the configuration defines. */
export async function backends(ctx: Context): Promise<void> {
  const rows = ctx.backends.names().map((name) => {
    const b = ctx.backends.get(name);
    return { name, driver: b.driverName, pools: b.poolNames(), persistence: b.persistence.kind };
  });
  ctx.out.result({ source: ctx.loaded.source, backends: rows }, () =>
    `configuration: ${ctx.loaded.source}\n` +
    table(["NAME", "DRIVER", "POOLS", "PERSISTENCE"], rows.map((r) => [r.name, r.driver, r.pools.join(","), r.persistence]), { maxWidths: { NAME: NAME_COLUMN_WIDTH } }));
}
