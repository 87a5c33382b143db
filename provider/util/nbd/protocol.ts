// Numbers of the NBD protocol (doc/proto.md of the NetworkBlockDevice/nbd project).

export const NBDMAGIC = 0x4e42444d41474943n;
export const IHAVEOPT = 0x49484156454f5054n;
export const OPTION_REPLY_MAGIC = 0x0003e889045565a9n;
export const REQUEST_MAGIC = 0x25609513;
export const SIMPLE_REPLY_MAGIC = 0x67446698;
export const STRUCTURED_REPLY_MAGIC = 0x668e33ef;

/** Handshake flags (server) and client flags. */
export const FLAG_FIXED_NEWSTYLE = 1 << 0;
export const FLAG_NO_ZEROES = 1 << 1;

export const Option = {
  EXPORT_NAME: 1,
  ABORT: 2,
  LIST: 3,
  STARTTLS: 5,
  INFO: 6,
  GO: 7,
  STRUCTURED_REPLY: 8,
  LIST_META_CONTEXT: 9,
  SET_META_CONTEXT: 10,
  EXTENDED_HEADERS: 11,
} as const;

const ERR = 2 ** 31;
export const Reply = {
  ACK: 1,
  SERVER: 2,
  INFO: 3,
  META_CONTEXT: 4,
  ERR_UNSUP: ERR + 1,
  ERR_POLICY: ERR + 2,
  ERR_INVALID: ERR + 3,
  ERR_PLATFORM: ERR + 4,
  ERR_TLS_REQD: ERR + 5,
  ERR_UNKNOWN: ERR + 6,
  ERR_SHUTDOWN: ERR + 7,
  ERR_BLOCK_SIZE_REQD: ERR + 8,
  ERR_TOO_BIG: ERR + 9,
} as const;

export const Info = { EXPORT: 0, NAME: 1, DESCRIPTION: 2, BLOCK_SIZE: 3 } as const;

/** Transmission flags. */
export const Tx = {
  HAS_FLAGS: 1 << 0,
  READ_ONLY: 1 << 1,
  SEND_FLUSH: 1 << 2,
  SEND_FUA: 1 << 3,
  ROTATIONAL: 1 << 4,
  SEND_TRIM: 1 << 5,
  SEND_WRITE_ZEROES: 1 << 6,
  SEND_DF: 1 << 7,
  CAN_MULTI_CONN: 1 << 8,
  SEND_CACHE: 1 << 10,
  SEND_FAST_ZERO: 1 << 11,
} as const;

export const Cmd = { READ: 0, WRITE: 1, DISC: 2, FLUSH: 3, TRIM: 4, CACHE: 5, WRITE_ZEROES: 6, BLOCK_STATUS: 7 } as const;

export const CmdFlag = { FUA: 1 << 0, NO_HOLE: 1 << 1, DF: 1 << 2, REQ_ONE: 1 << 3, FAST_ZERO: 1 << 4 } as const;

/** The flags each command may carry; any other bit is EINVAL. */
export const ALLOWED_FLAGS: Record<number, number> = {
  [Cmd.READ]: CmdFlag.DF | CmdFlag.FUA,
  [Cmd.WRITE]: CmdFlag.FUA,
  [Cmd.DISC]: 0,
  [Cmd.FLUSH]: 0,
  [Cmd.TRIM]: CmdFlag.FUA,
  [Cmd.CACHE]: 0,
  [Cmd.WRITE_ZEROES]: CmdFlag.FUA | CmdFlag.NO_HOLE | CmdFlag.FAST_ZERO,
  [Cmd.BLOCK_STATUS]: CmdFlag.REQ_ONE,
};

export const Chunk = { NONE: 0, OFFSET_DATA: 1, OFFSET_HOLE: 2, BLOCK_STATUS: 5, ERROR: 0x8001, ERROR_OFFSET: 0x8002 } as const;
export const CHUNK_DONE = 1;

export const Errno = { EPERM: 1, EIO: 5, ENOMEM: 12, EINVAL: 22, ENOSPC: 28, EOVERFLOW: 75, ENOTSUP: 95, ESHUTDOWN: 108 } as const;

/** base:allocation flags. */
export const STATE_HOLE = 1;
export const STATE_ZERO = 2;

export const BASE_ALLOCATION = "base:allocation";
export const BASE_ALLOCATION_ID = 1;

/**
 * Sizes we advertise with INFO_BLOCK_SIZE: any alignment, 4 KiB preferred, 64 MiB payloads.
 * A client that never asks is served up to 64 MiB all the same (older clients send large
 * requests without negotiating; nbdkit and nbd-server serve them).
 */
export const MIN_BLOCK = 1;
export const PREFERRED_BLOCK = 4096;
export const MAX_PAYLOAD = 64 * 1024 * 1024;

/** Option data larger than this is not read: the connection is closed instead. */
export const MAX_OPTION_LENGTH = 64 * 1024;
