// What the transmission threads (transmission.c) do I/O through: one set of operations per kind
// of storage (file.c: a file by descriptor; rbd.c: an RBD image through librbd), each called
// synchronously on the connection's threads, like pread and pwrite, so they must be thread-safe.
// Every operation returns 0, or -1 with errno set; none is called past the device's size.
#ifndef KINDLING_NBD_DEVICE_H
#define KINDLING_NBD_DEVICE_H
#include <node_api.h>
#include <stddef.h>
#include <stdint.h>

/** One run of a block status answer: `length` bytes from where the previous one ended. */
struct extent {
  uint64_t length;
  int hole; // reads as zeroes and holds no data
};

struct device;

struct device_ops {
  /** Fills all of `into`; what the storage does not hold reads as zeroes. */
  int (*read)(struct device *d, unsigned char *into, size_t n, uint64_t offset);
  int (*write)(struct device *d, const unsigned char *from, size_t n, uint64_t offset);
  int (*flush)(struct device *d);
  int (*trim)(struct device *d, uint64_t offset, uint64_t length);
  /** The range reads back as zeroes; `may_trim` lets it be deallocated for that. */
  int (*zero)(struct device *d, uint64_t offset, uint64_t length, int may_trim);
  /**
   * The allocation of [offset, offset+length) from `offset` on, at most `limit` runs into `out`;
   * returns how many (at least one), or -1. Data may be reported where there is none.
   */
  int (*extents)(struct device *d, uint64_t offset, uint64_t length, int limit, struct extent *out);
  /** Once every thread is done with the device: releases what it holds (if anything). */
  void (*release)(struct device *d);
};

struct device {
  const struct device_ops *ops;
  int fd;     // file.c: the descriptor (JavaScript's: never closed here)
  void *impl; // rbd.c: the open image and its cluster connection
};

extern const struct device_ops file_ops;
extern const struct device_ops rbd_ops;

/**
 * Takes over the image of the rbdOpen() handle `value` for a connection (the handle can be used
 * no more); 0 with a JavaScript exception pending when it is not one, or already used.
 */
int rbd_device_take(napi_env env, napi_value value, struct device *into);

/** Adds rbdOpen, rbdClose and rbdAvailable to the module's exports. */
void rbd_register(napi_env env, napi_value exports);

#endif
