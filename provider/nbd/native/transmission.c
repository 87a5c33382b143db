// The NBD transmission phase of one connection, served by native threads, for a device that is
// a file read and written by descriptor (the file driver's volumes and snapshots, file.c) or an
// RBD image through librbd (rbd.c); device.h is what the two have in common.
//
// Why native: the profile in bench/README.md ("Where the time goes") found that a 1-4 KiB
// request spends most of its time in the hop to libuv's thread pool and back (futexes, an
// eventfd, extra epoll waits), which only doing the I/O on the thread that owns the socket
// removes, and Node cannot hand an accepted socket to a worker thread. A 1 MiB write spends it in
// copying 64 KiB socket reads into a fresh buffer and collecting the garbage, which reading the
// payload straight into a reused buffer removes. This is nbdkit's model: a few threads per
// connection take turns reading one request each (a read lock), do the pread/pwrite themselves,
// and send their reply whole (a write lock), so requests run in parallel and replies never
// interleave.
//
// The JavaScript side (transmission.ts) has done the handshake and hands over a duplicate of
// the socket, the device (a descriptor, or an image rbdOpen() opened), what was agreed, and any
// bytes it read past the handshake. The threads end when the client disconnects, the socket breaks, or stop() shuts the
// socket's reading side; requests in flight still finish and are answered. Then the last thread
// flushes a writable device, releases it, half-closes and closes its socket, and reports to
// JavaScript. A file's descriptor stays JavaScript's: it is closed there, after the report; an
// RBD image is the connection's own, closed by its last thread.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <node_api.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>
#include "device.h"

// Numbers of the NBD protocol (provider/util/nbd/protocol.ts has the same, with names).
#define REQUEST_MAGIC 0x25609513u
#define SIMPLE_REPLY_MAGIC 0x67446698u
#define STRUCTURED_REPLY_MAGIC 0x668e33efu
enum { CMD_READ, CMD_WRITE, CMD_DISC, CMD_FLUSH, CMD_TRIM, CMD_CACHE, CMD_WRITE_ZEROES, CMD_BLOCK_STATUS };
enum { FLAG_FUA = 1, FLAG_NO_HOLE = 2, FLAG_DF = 4, FLAG_REQ_ONE = 8, FLAG_FAST_ZERO = 16 };
enum { CHUNK_NONE = 0, CHUNK_OFFSET_DATA = 1, CHUNK_OFFSET_HOLE = 2, CHUNK_BLOCK_STATUS = 5, CHUNK_ERROR = 0x8001, CHUNK_ERROR_OFFSET = 0x8002 };
#define CHUNK_DONE 1
#define NBD_EPERM 1
#define NBD_EIO 5
#define NBD_ENOMEM 12
#define NBD_EINVAL 22
#define NBD_ENOSPC 28
#define STATE_HOLE 1
#define STATE_ZERO 2
#define BASE_ALLOCATION_ID 1
#define U32_MAX_ALIGNED (0xffffffffu - 0xfffu)
// Block status answers at most this many extents at once; the client asks again for the rest.
#define MAX_EXTENTS 1024
// A thread keeps a buffer this large between requests; a larger one is freed after use, so a
// few 64 MiB requests do not leave 64 MiB per thread behind.
#define KEEP_BUFFER (4u << 20)

static const uint16_t ALLOWED_FLAGS[] = {
  [CMD_READ] = FLAG_DF | FLAG_FUA,
  [CMD_WRITE] = FLAG_FUA,
  [CMD_DISC] = 0,
  [CMD_FLUSH] = 0,
  [CMD_TRIM] = FLAG_FUA,
  [CMD_CACHE] = 0,
  [CMD_WRITE_ZEROES] = FLAG_FUA | FLAG_NO_HOLE | FLAG_FAST_ZERO,
  [CMD_BLOCK_STATUS] = FLAG_REQ_ONE,
};

struct connection {
  int sock;
  struct device device;
  uint64_t size;
  int read_only, structured, allocation;
  uint32_t max_payload;
  // Bytes JavaScript read past the handshake: the start of the first request(s).
  unsigned char *prefix;
  size_t prefix_length, prefix_at;

  pthread_mutex_t read_lock;  // one thread reads a request (header and payload) at a time
  pthread_mutex_t write_lock; // one reply is sent at a time, whole
  pthread_mutex_t state_lock; // the fields below
  int stopping;               // no new requests are read
  int running;                // threads not yet finished
  uint64_t requests;
  int client_error;           // the client broke the protocol (bad magic, oversized write)
  char socket_error[128];     // the socket failed (not a clean disconnect)
  int handle_gone;            // JavaScript's handle was collected

  napi_threadsafe_function report;
};

struct request {
  uint16_t flags, type;
  unsigned char cookie[8];
  uint64_t offset;
  uint32_t length;
};

struct worker {
  struct connection *c;
  unsigned char *buffer;
  size_t capacity;
};

static uint16_t be16(const unsigned char *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static uint32_t be32(const unsigned char *p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]; }
static uint64_t be64(const unsigned char *p) { return (uint64_t)be32(p) << 32 | be32(p + 4); }
static void put16(unsigned char *p, uint16_t v) { p[0] = v >> 8; p[1] = v & 0xff; }
static void put32(unsigned char *p, uint32_t v) { put16(p, v >> 16); put16(p + 2, v & 0xffff); }
static void put64(unsigned char *p, uint64_t v) { put32(p, v >> 32); put32(p + 4, v & 0xffffffffu); }

static int stopping(struct connection *c) {
  pthread_mutex_lock(&c->state_lock);
  int s = c->stopping;
  pthread_mutex_unlock(&c->state_lock);
  return s;
}

static void stop_reading(struct connection *c, const char *socket_error, int client_error) {
  pthread_mutex_lock(&c->state_lock);
  c->stopping = 1;
  if (socket_error && !c->socket_error[0]) snprintf(c->socket_error, sizeof c->socket_error, "%s", socket_error);
  if (client_error) c->client_error = 1;
  pthread_mutex_unlock(&c->state_lock);
}

/** Exactly `n` bytes from the client (what JavaScript already read first); 0 when it ended. */
static int receive(struct connection *c, unsigned char *into, size_t n) {
  size_t got = 0;
  if (c->prefix_at < c->prefix_length) {
    size_t take = c->prefix_length - c->prefix_at;
    if (take > n) take = n;
    memcpy(into, c->prefix + c->prefix_at, take);
    c->prefix_at += take;
    got = take;
  }
  while (got < n) {
    ssize_t r = recv(c->sock, into + got, n - got, MSG_WAITALL);
    if (r > 0) got += (size_t)r;
    else if (r == 0) return 0;
    else if (errno != EINTR) {
      stop_reading(c, strerror(errno), 0);
      return 0;
    }
  }
  return 1;
}

/** One reply, whole, under the write lock; a failure to send stops the connection. */
static void send_reply(struct connection *c, struct iovec *iov, int count) {
  pthread_mutex_lock(&c->write_lock);
  struct msghdr msg = { .msg_iov = iov, .msg_iovlen = (size_t)count };
  // A large payload goes in a sendmsg of its own, after the headers sent with MSG_MORE (as
  // nbdkit does): header and 1 MiB in one sendmsg made sequential 1 MiB reads 0.74x nbdkit's,
  // in two 0.95x (median of 5 each; bench/README.md). With one, the same CPU moved less data:
  // more of it went to the kernel's loopback softirq and socket backlog work.
  int split = count > 1 && iov[count - 1].iov_len >= 65536;
  if (split) msg.msg_iovlen = (size_t)count - 1;
  while (msg.msg_iovlen > 0) {
    ssize_t w = sendmsg(c->sock, &msg, MSG_NOSIGNAL | (split ? MSG_MORE : 0));
    if (w < 0) {
      if (errno == EINTR) continue;
      pthread_mutex_unlock(&c->write_lock);
      stop_reading(c, strerror(errno), 0);
      shutdown(c->sock, SHUT_RD); // wakes the thread waiting for the next request
      return;
    }
    size_t left = (size_t)w;
    while (msg.msg_iovlen > 0 && left >= msg.msg_iov[0].iov_len) {
      left -= msg.msg_iov[0].iov_len;
      msg.msg_iov++;
      msg.msg_iovlen--;
    }
    if (msg.msg_iovlen > 0) {
      msg.msg_iov[0].iov_base = (char *)msg.msg_iov[0].iov_base + left;
      msg.msg_iov[0].iov_len -= left;
    }
    if (msg.msg_iovlen == 0 && split) {
      split = 0;
      msg.msg_iov = &iov[count - 1];
      msg.msg_iovlen = 1;
    }
  }
  pthread_mutex_unlock(&c->write_lock);
}

static void simple_header(unsigned char *h, const struct request *r, uint32_t error) {
  put32(h, SIMPLE_REPLY_MAGIC);
  put32(h + 4, error);
  memcpy(h + 8, r->cookie, 8);
}

static void chunk_header(unsigned char *h, const struct request *r, uint16_t type, uint32_t length) {
  put32(h, STRUCTURED_REPLY_MAGIC);
  put16(h + 4, CHUNK_DONE);
  put16(h + 6, type);
  memcpy(h + 8, r->cookie, 8);
  put32(h + 16, length);
}

static void reply_ok(struct connection *c, const struct request *r) {
  unsigned char h[20];
  struct iovec iov = { h, 16 };
  if (c->structured) {
    chunk_header(h, r, CHUNK_NONE, 0);
    iov.iov_len = 20;
  } else simple_header(h, r, 0);
  send_reply(c, &iov, 1);
}

static void reply_error(struct connection *c, const struct request *r, uint32_t error, const char *message) {
  unsigned char h[20], body[6];
  if (!c->structured) {
    simple_header(h, r, error);
    struct iovec iov = { h, 16 };
    send_reply(c, &iov, 1);
    return;
  }
  size_t length = strlen(message);
  if (length > 1024) length = 1024;
  put32(body, error);
  put16(body + 4, (uint16_t)length);
  chunk_header(h, r, CHUNK_ERROR, (uint32_t)(6 + length));
  struct iovec iov[3] = { { h, 20 }, { body, 6 }, { (void *)message, length } };
  send_reply(c, iov, 3);
}

/** The NBD errno for a system call's failure. */
static uint32_t nbd_errno(int e) {
  switch (e) {
    case ENOSPC: case EDQUOT: return NBD_ENOSPC;
    case EPERM: case EACCES: case EROFS: return NBD_EPERM;
    case EINVAL: return NBD_EINVAL;
    case ENOMEM: return NBD_ENOMEM;
    default: return NBD_EIO;
  }
}

static int all_zero(const unsigned char *p, size_t n) {
  if (n == 0) return 0;
  // Data rarely starts with zeroes: the first bytes decide almost every read.
  if (p[0] || p[n - 1]) return 0;
  return memcmp(p, p + 1, n - 1) == 0;
}

/** Grows the worker's buffer to `n` bytes; 0 when memory runs out. */
static int reserve(struct worker *w, size_t n) {
  if (n <= w->capacity) return 1;
  // Page-aligned: malloc's large blocks start 16 bytes into their pages, and every copy to or
  // from a buffer so placed (the pread's out of the page cache, the send's into the socket) is
  // misaligned against the kernel's page-aligned side.
  void *b;
  if (posix_memalign(&b, 4096, n) != 0) return 0;
  free(w->buffer); // its bytes are never needed again: the buffer holds one request at a time
  w->buffer = b;
  w->capacity = n;
  return 1;
}

static void shrink(struct worker *w) {
  if (w->capacity <= KEEP_BUFFER) return;
  free(w->buffer);
  w->buffer = NULL;
  w->capacity = 0;
}

static void do_read(struct worker *w, const struct request *r) {
  struct connection *c = w->c;
  if (!reserve(w, r->length)) {
    reply_error(c, r, NBD_ENOMEM, "out of memory for the read");
    return;
  }
  unsigned char h[20], tail[12];
  if (c->device.ops->read(&c->device, w->buffer, r->length, r->offset) < 0) {
    int e = errno;
    if (!c->structured) {
      simple_header(h, r, nbd_errno(e));
      struct iovec iov = { h, 16 };
      send_reply(c, &iov, 1);
      return;
    }
    // The error of a structured read says where it happened.
    const char *message = strerror(e);
    size_t length = strlen(message);
    unsigned char body[6];
    put32(body, nbd_errno(e));
    put16(body + 4, (uint16_t)length);
    put64(tail, r->offset);
    chunk_header(h, r, CHUNK_ERROR_OFFSET, (uint32_t)(6 + length + 8));
    struct iovec iov[4] = { { h, 20 }, { body, 6 }, { (void *)message, length }, { tail, 8 } };
    send_reply(c, iov, 4);
    return;
  }
  if (!c->structured) {
    simple_header(h, r, 0);
    struct iovec iov[2] = { { h, 16 }, { w->buffer, r->length } };
    send_reply(c, iov, 2);
    return;
  }
  put64(tail, r->offset);
  if (all_zero(w->buffer, r->length)) {
    put32(tail + 8, r->length);
    chunk_header(h, r, CHUNK_OFFSET_HOLE, 12);
    struct iovec iov[2] = { { h, 20 }, { tail, 12 } };
    send_reply(c, iov, 2);
    return;
  }
  chunk_header(h, r, CHUNK_OFFSET_DATA, 8 + r->length);
  struct iovec iov[3] = { { h, 20 }, { tail, 8 }, { w->buffer, r->length } };
  send_reply(c, iov, 3);
}

static void do_block_status(struct connection *c, const struct request *r) {
  static __thread unsigned char body[4 + 8 * MAX_EXTENTS];
  static __thread struct extent extents[MAX_EXTENTS];
  int limit = (r->flags & FLAG_REQ_ONE) ? 1 : MAX_EXTENTS;
  int found = c->device.ops->extents(&c->device, r->offset, r->length, limit, extents);
  if (found < 0) {
    reply_error(c, r, nbd_errno(errno), strerror(errno));
    return;
  }
  put32(body, BASE_ALLOCATION_ID);
  int count = 0;
  while (count < found) {
    uint64_t span = extents[count].length;
    int clipped = span > U32_MAX_ALIGNED;
    if (clipped) span = U32_MAX_ALIGNED;
    put32(body + 4 + 8 * count, (uint32_t)span);
    put32(body + 8 + 8 * count, extents[count].hole ? STATE_HOLE | STATE_ZERO : 0);
    count++;
    if (clipped) break; // the client asks again for the rest
  }
  unsigned char h[20];
  chunk_header(h, r, CHUNK_BLOCK_STATUS, (uint32_t)(4 + 8 * count));
  struct iovec iov[2] = { { h, 20 }, { body, (size_t)(4 + 8 * count) } };
  send_reply(c, iov, 2);
}

static int flush_device(struct connection *c) {
  return c->read_only ? 0 : c->device.ops->flush(&c->device);
}

/** Checks a request against the export; 0 when it may run, else the errno it is answered with. */
static uint32_t check(struct connection *c, const struct request *r, const char **why) {
  if (r->type > CMD_BLOCK_STATUS) return *why = "unknown command", NBD_EINVAL;
  if (r->flags & ~ALLOWED_FLAGS[r->type]) return *why = "unknown flags", NBD_EINVAL;
  if ((r->flags & FLAG_DF) && !c->structured) return *why = "DF without structured replies", NBD_EINVAL;
  if (r->offset > c->size || r->length > c->size - r->offset) {
    *why = "past the end of the export";
    return r->type == CMD_WRITE || r->type == CMD_WRITE_ZEROES ? NBD_ENOSPC : NBD_EINVAL;
  }
  int writes = r->type == CMD_WRITE || r->type == CMD_TRIM || r->type == CMD_WRITE_ZEROES;
  if (writes && c->read_only) return *why = "read-only export", NBD_EPERM;
  if (r->type == CMD_READ && r->length > c->max_payload) return *why = "read larger than the maximum payload", NBD_EINVAL;
  if (r->type == CMD_BLOCK_STATUS) {
    if (!c->structured || !c->allocation) return *why = "no metadata context was negotiated", NBD_EINVAL;
    if (r->length == 0) return *why = "zero-length block status", NBD_EINVAL;
  }
  return 0;
}

static void handle(struct worker *w, const struct request *r) {
  struct connection *c = w->c;
  const char *why = "";
  uint32_t error = check(c, r, &why);
  if (error) {
    reply_error(c, r, error, why);
    return;
  }
  int failed = 0;
  switch (r->type) {
    case CMD_READ:
      do_read(w, r);
      return;
    case CMD_WRITE:
      failed = c->device.ops->write(&c->device, w->buffer, r->length, r->offset) < 0 || ((r->flags & FLAG_FUA) && flush_device(c) < 0);
      break;
    case CMD_FLUSH:
      failed = flush_device(c) < 0;
      break;
    case CMD_TRIM:
      failed = c->device.ops->trim(&c->device, r->offset, r->length) < 0 || ((r->flags & FLAG_FUA) && flush_device(c) < 0);
      break;
    case CMD_WRITE_ZEROES:
      failed = c->device.ops->zero(&c->device, r->offset, r->length, !(r->flags & FLAG_NO_HOLE)) < 0 || ((r->flags & FLAG_FUA) && flush_device(c) < 0);
      break;
    case CMD_CACHE:
      break; // a hint; the page cache does the rest
    case CMD_BLOCK_STATUS:
      do_block_status(c, r);
      return;
  }
  if (failed) reply_error(c, r, nbd_errno(errno), strerror(errno));
  else reply_ok(c, r);
}

/**
 * Reads the next request, and a write's payload into the worker's buffer, under the read lock.
 * 0 when the connection is over for this thread (disconnect, stop, a broken client).
 */
static int next_request(struct worker *w, struct request *r) {
  struct connection *c = w->c;
  unsigned char header[28];
  if (stopping(c) || !receive(c, header, sizeof header)) return 0;
  if (stopping(c)) return 0; // stopped while waiting: a request never started is never answered
  if (be32(header) != REQUEST_MAGIC) {
    stop_reading(c, NULL, 1); // out of sync: hard disconnect
    return 0;
  }
  r->flags = be16(header + 4);
  r->type = be16(header + 6);
  memcpy(r->cookie, header + 8, 8);
  r->offset = be64(header + 16);
  r->length = be32(header + 24);
  if (r->type == CMD_DISC) {
    stop_reading(c, NULL, 0);
    return 0;
  }
  if (r->type != CMD_WRITE) return 1;
  if (r->length > c->max_payload) {
    // Too big to take in: the spec allows a hard disconnect above the maximum payload.
    reply_error(c, r, NBD_EINVAL, "write larger than the maximum payload");
    stop_reading(c, NULL, 1);
    return 0;
  }
  if (!reserve(w, r->length)) {
    reply_error(c, r, NBD_ENOMEM, "out of memory for the write");
    stop_reading(c, NULL, 1); // its payload cannot be skipped without reading it
    return 0;
  }
  return receive(c, w->buffer, r->length);
}

static void finish(struct connection *c) {
  pthread_mutex_lock(&c->state_lock);
  int sock = c->sock;
  c->sock = -1; // stop() no longer touches it
  pthread_mutex_unlock(&c->state_lock);
  shutdown(sock, SHUT_WR); // the last replies go out before the close
  close(sock);
  // Every reply is sent: the client learns at once that the connection is over (clients such
  // as nbdcopy wait for that before they exit), then the flush, which is the server's own: its
  // stop() is answered by the report, after it.
  flush_device(c);
  c->device.ops->release(&c->device);
  // `c` may be freed on the JavaScript thread as soon as the report is queued.
  napi_threadsafe_function report = c->report;
  napi_call_threadsafe_function(report, c, napi_tsfn_blocking);
  napi_release_threadsafe_function(report, napi_tsfn_release);
}

static void *serve_thread(void *arg) {
  struct worker w = { .c = arg };
  struct connection *c = w.c;
  pthread_setname_np(pthread_self(), "kindling-nbd"); // as top and /proc/PID/task show it
  for (;;) {
    struct request r;
    pthread_mutex_lock(&c->read_lock);
    int ok = next_request(&w, &r);
    pthread_mutex_unlock(&c->read_lock);
    if (!ok) break;
    handle(&w, &r);
    shrink(&w);
    pthread_mutex_lock(&c->state_lock);
    c->requests++;
    pthread_mutex_unlock(&c->state_lock);
  }
  free(w.buffer);
  // Wake the others: one may be waiting for a request that will never come.
  stop_reading(c, NULL, 0);
  shutdown(c->sock, SHUT_RD);
  pthread_mutex_lock(&c->state_lock);
  int last = --c->running == 0;
  pthread_mutex_unlock(&c->state_lock);
  if (last) finish(c);
  return NULL;
}

// ---- JavaScript ----

static napi_value throw_error(napi_env env, const char *message) {
  napi_throw_error(env, NULL, message);
  return NULL;
}

static int get_int64(napi_env env, napi_value obj, const char *name, int64_t *out) {
  napi_value v;
  if (napi_get_named_property(env, obj, name, &v) != napi_ok) return 0;
  return napi_get_value_int64(env, v, out) == napi_ok;
}

static int get_bool(napi_env env, napi_value obj, const char *name, int *out) {
  napi_value v;
  bool b;
  if (napi_get_named_property(env, obj, name, &v) != napi_ok || napi_get_value_bool(env, v, &b) != napi_ok) return 0;
  *out = b;
  return 1;
}

static void connection_free(struct connection *c) {
  pthread_mutex_destroy(&c->read_lock);
  pthread_mutex_destroy(&c->write_lock);
  pthread_mutex_destroy(&c->state_lock);
  free(c->prefix);
  free(c);
}

/** On the JavaScript thread once every thread is done: calls back with what happened. */
static void call_report(napi_env env, napi_value callback, void *context, void *data) {
  (void)context;
  struct connection *c = data;
  if (env != NULL) {
    napi_value result, value, undefined;
    napi_create_object(env, &result);
    napi_create_int64(env, (int64_t)c->requests, &value);
    napi_set_named_property(env, result, "requests", value);
    napi_get_boolean(env, c->client_error, &value);
    napi_set_named_property(env, result, "clientError", value);
    if (c->socket_error[0]) {
      napi_create_string_utf8(env, c->socket_error, NAPI_AUTO_LENGTH, &value);
      napi_set_named_property(env, result, "socketError", value);
    }
    napi_get_undefined(env, &undefined);
    napi_call_function(env, undefined, callback, 1, &result, NULL);
  }
  // Freed by whichever comes last: this report, or the collection of JavaScript's handle.
  pthread_mutex_lock(&c->state_lock);
  c->report = NULL;
  int done = c->handle_gone;
  pthread_mutex_unlock(&c->state_lock);
  if (done) connection_free(c);
}

static void handle_finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  struct connection *c = data;
  // Freed by whichever comes last: the report (the threads are done), or this.
  pthread_mutex_lock(&c->state_lock);
  c->handle_gone = 1;
  int done = c->report == NULL;
  pthread_mutex_unlock(&c->state_lock);
  if (done) connection_free(c);
}

/**
 * serve({ socket, device, size, readOnly, structured, allocation, maxPayload, threads, prefix }, onDone)
 * Takes a duplicate of `socket` (the caller closes its own), uses `device` without closing it,
 * and returns a handle for stop(handle).
 */
static napi_value serve(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 2) return throw_error(env, "serve(options, onDone)");
  int64_t sock, device = -1, size, max_payload, threads;
  int read_only, structured, allocation;
  bool has_rbd = false;
  napi_has_named_property(env, argv[0], "rbd", &has_rbd);
  if (!get_int64(env, argv[0], "socket", &sock) || (!has_rbd && !get_int64(env, argv[0], "device", &device)) || !get_int64(env, argv[0], "size", &size) ||
      !get_int64(env, argv[0], "maxPayload", &max_payload) || !get_int64(env, argv[0], "threads", &threads) ||
      !get_bool(env, argv[0], "readOnly", &read_only) || !get_bool(env, argv[0], "structured", &structured) ||
      !get_bool(env, argv[0], "allocation", &allocation)) {
    return throw_error(env, "serve: socket, device or rbd, size, maxPayload, threads, readOnly, structured and allocation are required");
  }
  if (threads < 1 || threads > 64 || size < 0 || max_payload < 1 || max_payload > 0xffffffffLL) return throw_error(env, "serve: an option is out of range");
  struct connection *c = calloc(1, sizeof *c);
  if (!c) return throw_error(env, "serve: out of memory");
  c->device = (struct device){ .ops = &file_ops, .fd = (int)device };
  if (has_rbd) {
    // Last of the checks: from here on the image is the connection's, released with it.
    napi_value rbd;
    napi_get_named_property(env, argv[0], "rbd", &rbd);
    if (!rbd_device_take(env, rbd, &c->device)) {
      free(c);
      return NULL;
    }
  }
  napi_value prefix;
  bool has_prefix = false;
  napi_has_named_property(env, argv[0], "prefix", &has_prefix);
  if (has_prefix && napi_get_named_property(env, argv[0], "prefix", &prefix) == napi_ok) {
    bool is_buffer = false;
    napi_is_buffer(env, prefix, &is_buffer);
    if (is_buffer) {
      void *data;
      size_t length;
      napi_get_buffer_info(env, prefix, &data, &length);
      if (length > 0) {
        c->prefix = malloc(length);
        if (!c->prefix) {
          c->device.ops->release(&c->device);
          free(c);
          return throw_error(env, "serve: out of memory");
        }
        memcpy(c->prefix, data, length);
        c->prefix_length = length;
      }
    }
  }
  c->sock = dup((int)sock);
  if (c->sock < 0) {
    c->device.ops->release(&c->device);
    free(c->prefix);
    free(c);
    return throw_error(env, strerror(errno));
  }
  // libuv made the socket non-blocking; these threads wait on it. (The flag belongs to the
  // socket, not the descriptor: the caller closes its own descriptor right after this.)
  int fl = fcntl(c->sock, F_GETFL);
  if (fl >= 0) fcntl(c->sock, F_SETFL, fl & ~O_NONBLOCK);
  c->size = (uint64_t)size;
  c->read_only = read_only;
  c->structured = structured;
  c->allocation = allocation;
  c->max_payload = (uint32_t)max_payload;
  pthread_mutex_init(&c->read_lock, NULL);
  pthread_mutex_init(&c->write_lock, NULL);
  pthread_mutex_init(&c->state_lock, NULL);
  napi_value name;
  napi_create_string_utf8(env, "kindling nbd transmission", NAPI_AUTO_LENGTH, &name);
  if (napi_create_threadsafe_function(env, argv[1], NULL, name, 0, 1, NULL, NULL, NULL, call_report, &c->report) != napi_ok) {
    close(c->sock);
    c->device.ops->release(&c->device);
    connection_free(c);
    return throw_error(env, "serve: cannot make the report callback");
  }
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  // librbd's calls go deeper than a pread does.
  pthread_attr_setstacksize(&attr, has_rbd ? 1024 * 1024 : 256 * 1024);
  c->running = (int)threads;
  for (int64_t i = 0; i < threads; i++) {
    pthread_t t;
    if (pthread_create(&t, &attr, serve_thread, c) != 0) {
      // Fewer threads than asked: the ones that started serve alone.
      pthread_mutex_lock(&c->state_lock);
      c->running -= (int)(threads - i);
      int none = c->running == 0;
      pthread_mutex_unlock(&c->state_lock);
      if (none) {
        pthread_attr_destroy(&attr);
        close(c->sock);
        napi_release_threadsafe_function(c->report, napi_tsfn_abort);
        c->device.ops->release(&c->device);
        connection_free(c);
        return throw_error(env, "serve: cannot start a thread");
      }
      break;
    }
  }
  pthread_attr_destroy(&attr);
  napi_value handle;
  napi_create_external(env, c, handle_finalize, NULL, &handle);
  return handle;
}

/**
 * Shuts the connection's socket in direction `how` under the state lock (the last thread takes
 * `sock` under it before closing it), and no new requests are read.
 */
static napi_value shut(napi_env env, napi_callback_info info, int how, const char *usage) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  void *data = NULL;
  if (argc < 1 || napi_get_value_external(env, argv[0], &data) != napi_ok || !data) return throw_error(env, usage);
  struct connection *c = data;
  pthread_mutex_lock(&c->state_lock);
  c->stopping = 1;
  if (c->sock >= 0) shutdown(c->sock, how);
  pthread_mutex_unlock(&c->state_lock);
  return NULL;
}

/** stop(handle): no new requests are read; those in flight finish and are answered. */
static napi_value stop(napi_env env, napi_callback_info info) {
  return shut(env, info, SHUT_RD, "stop(handle)");
}

/**
 * abort(handle): the connection ends now. Shutting both directions wakes a thread blocked in
 * sendmsg to a client that stopped reading (stop() alone would wait for it forever); requests
 * in flight finish without their replies.
 */
static napi_value abort_connection(napi_env env, napi_callback_info info) {
  return shut(env, info, SHUT_RDWR, "abort(handle)");
}

static napi_value init(napi_env env, napi_value exports) {
  napi_value fn;
  rbd_register(env, exports);
  napi_create_function(env, "serve", NAPI_AUTO_LENGTH, serve, NULL, &fn);
  napi_set_named_property(env, exports, "serve", fn);
  napi_create_function(env, "stop", NAPI_AUTO_LENGTH, stop, NULL, &fn);
  napi_set_named_property(env, exports, "stop", fn);
  napi_create_function(env, "abort", NAPI_AUTO_LENGTH, abort_connection, NULL, &fn);
  napi_set_named_property(env, exports, "abort", fn);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
