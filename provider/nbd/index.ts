export { NbdServer, type ServerOptions } from "./server";
export { ExportTable, type ExportSource } from "./exports";
export { Limiter } from "./qos";
