// The RBD device of the native data path: an image (or a snapshot of one) read and written
// through librbd from the connection's threads, with no qemu-nbd and no second NBD hop between.
//
// librbd and librados are loaded with dlopen the first time an image is opened, not linked:
// the module must load, and file volumes keep their native path, where librbd is not installed.
// KINDLING_LIBRBD names another librbd to load (a missing one turns this path off: rbd volumes
// are then served through qemu-nbd by the JavaScript path). The few prototypes used are declared
// here, as librbd/librados.h (librbd-dev) give them, so building needs no Ceph headers.
//
// One cluster connection, pool context and image per connection, opened by rbdOpen() on
// libuv's thread pool (connecting takes tens of milliseconds), handed to serve(), and closed by
// the connection's last thread after its final flush. librbd is thread-safe: its synchronous
// calls from several threads run in parallel, as qemu-nbd's asynchronous ones do.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "device.h"

typedef void *rados_t;
typedef void *rados_ioctx_t;
typedef void *rbd_image_t;

static struct {
  int (*rados_create)(rados_t *cluster, const char *id);
  int (*rados_conf_read_file)(rados_t cluster, const char *path);
  int (*rados_conf_set)(rados_t cluster, const char *option, const char *value);
  int (*rados_connect)(rados_t cluster);
  void (*rados_shutdown)(rados_t cluster);
  int (*rados_ioctx_create)(rados_t cluster, const char *pool, rados_ioctx_t *io);
  void (*rados_ioctx_destroy)(rados_ioctx_t io);
  int (*rbd_open)(rados_ioctx_t io, const char *name, rbd_image_t *image, const char *snap_name);
  int (*rbd_open_read_only)(rados_ioctx_t io, const char *name, rbd_image_t *image, const char *snap_name);
  int (*rbd_close)(rbd_image_t image);
  int (*rbd_get_size)(rbd_image_t image, uint64_t *size);
  ssize_t (*rbd_read)(rbd_image_t image, uint64_t ofs, size_t len, char *buf);
  ssize_t (*rbd_write)(rbd_image_t image, uint64_t ofs, size_t len, const char *buf);
  int (*rbd_flush)(rbd_image_t image);
  int (*rbd_discard)(rbd_image_t image, uint64_t ofs, uint64_t len);
  ssize_t (*rbd_write_zeroes)(rbd_image_t image, uint64_t ofs, size_t len, int zero_flags, int op_flags);
  int (*rbd_diff_iterate2)(rbd_image_t image, const char *fromsnapname, uint64_t ofs, uint64_t len, uint8_t include_parent,
                           uint8_t whole_object, int (*cb)(uint64_t, size_t, int, void *), void *arg);
} lib;

static pthread_once_t load_once = PTHREAD_ONCE_INIT;
static char load_error[512]; // empty once librbd is loaded

static void load(void) {
  const char *path = getenv("KINDLING_LIBRBD");
  if (!path || !*path) path = "librbd.so.1";
  void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (!h) {
    snprintf(load_error, sizeof load_error, "cannot load %s: %s", path, dlerror());
    return;
  }
  // rados_* come from librados, which librbd depends on: dlsym searches its dependencies too.
#define SYM(name)                                                                             \
  if (!(*(void **)&lib.name = dlsym(h, #name))) {                                            \
    snprintf(load_error, sizeof load_error, "%s has no %s (librbd 15 or later is needed)", path, #name); \
    return;                                                                                   \
  }
  SYM(rados_create) SYM(rados_conf_read_file) SYM(rados_conf_set) SYM(rados_connect) SYM(rados_shutdown)
  SYM(rados_ioctx_create) SYM(rados_ioctx_destroy) SYM(rbd_open) SYM(rbd_open_read_only) SYM(rbd_close)
  SYM(rbd_get_size) SYM(rbd_read) SYM(rbd_write) SYM(rbd_flush) SYM(rbd_discard) SYM(rbd_write_zeroes)
  SYM(rbd_diff_iterate2)
#undef SYM
}

/** NULL when librbd is loaded, else why not. */
static const char *loaded(void) {
  pthread_once(&load_once, load);
  return load_error[0] ? load_error : NULL;
}

struct image {
  rados_t cluster;
  rados_ioctx_t io;
  rbd_image_t image;
  uint64_t size;
};

static void image_close(struct image *im) {
  if (!im) return;
  if (im->image) lib.rbd_close(im->image); // waits for librbd's writeback and lets go of the image's lock
  if (im->io) lib.rados_ioctx_destroy(im->io);
  if (im->cluster) lib.rados_shutdown(im->cluster);
  free(im);
}

// ---- the device operations

#define IMAGE(d) (((struct image *)(d)->impl)->image)

/** librbd returns -errno; the device operations return -1 with errno. */
static int result(int r) {
  if (r >= 0) return 0;
  errno = -r;
  return -1;
}

// librbd takes a length as size_t but answers a read or write with an int count: stay well below.
#define RBD_STEP (1u << 30)

static int rbd_dev_read(struct device *d, unsigned char *into, size_t n, uint64_t offset) {
  while (n > 0) {
    size_t step = n < RBD_STEP ? n : RBD_STEP;
    ssize_t r = lib.rbd_read(IMAGE(d), offset, step, (char *)into);
    if (r < 0) return result((int)r);
    if (r == 0) { // past the image's end (it shrank): zeroes, as the contract says
      memset(into, 0, n);
      return 0;
    }
    into += r;
    offset += (uint64_t)r;
    n -= (size_t)r;
  }
  return 0;
}

static int rbd_dev_write(struct device *d, const unsigned char *from, size_t n, uint64_t offset) {
  while (n > 0) {
    size_t step = n < RBD_STEP ? n : RBD_STEP;
    ssize_t r = lib.rbd_write(IMAGE(d), offset, step, (const char *)from);
    if (r < 0) return result((int)r);
    if (r == 0) return result(-EIO);
    from += r;
    offset += (uint64_t)r;
    n -= (size_t)r;
  }
  return 0;
}

static int rbd_dev_flush(struct device *d) {
  return result(lib.rbd_flush(IMAGE(d)));
}

static int rbd_dev_trim(struct device *d, uint64_t offset, uint64_t length) {
  return length == 0 ? 0 : result(lib.rbd_discard(IMAGE(d), offset, length));
}

static int rbd_dev_zero(struct device *d, uint64_t offset, uint64_t length, int may_trim) {
  (void)may_trim; // librbd zeroes by deallocating whole objects and writing zeroes in the rest
  while (length > 0) {
    uint64_t step = length < RBD_STEP ? length : RBD_STEP;
    ssize_t r = lib.rbd_write_zeroes(IMAGE(d), offset, (size_t)step, 0, 0);
    if (r < 0) return result((int)r);
    offset += step;
    length -= step;
  }
  return 0;
}

struct diff {
  uint64_t at, end;
  int limit, count;
  struct extent *out;
};

static void diff_push(struct diff *s, uint64_t to, int hole) {
  if (to <= s->at) return;
  if (s->count > 0 && s->out[s->count - 1].hole == hole) s->out[s->count - 1].length += to - s->at;
  else s->out[s->count++] = (struct extent){ to - s->at, hole };
  s->at = to;
}

/** rbd_diff_iterate2's callback: an allocated extent; what lies between them is a hole. */
static int diff_extent(uint64_t offset, size_t length, int exists, void *arg) {
  struct diff *s = arg;
  if (!exists) return 0;
  uint64_t from = offset < s->at ? s->at : offset, to = offset + length > s->end ? s->end : offset + length;
  if (to <= from) return 0;
  if (from > s->at) {
    if (s->count == s->limit && s->out[s->count - 1].hole != 1) return -ECANCELED;
    diff_push(s, from, 1);
  }
  if (s->count == s->limit && s->out[s->count - 1].hole != 0) return -ECANCELED;
  diff_push(s, to, 0);
  return 0;
}

/**
 * Allocation from rbd_diff_iterate2 since the image's creation, by whole objects (what the
 * object map answers without reading them), a clone's parent counting as data. Where librbd
 * cannot answer, the whole range is reported as data, which is always true enough.
 */
static int rbd_dev_extents(struct device *d, uint64_t offset, uint64_t length, int limit, struct extent *out) {
  struct diff s = { .at = offset, .end = offset + length, .limit = limit, .out = out };
  int r = lib.rbd_diff_iterate2(IMAGE(d), NULL, offset, length, 1, 1, diff_extent, &s);
  if (r < 0 && r != -ECANCELED) {
    out[0] = (struct extent){ length, 0 };
    return 1;
  }
  // The rest is a hole, where there is room to say so (else the client asks again).
  if (r != -ECANCELED && s.at < s.end && (s.count < limit || s.out[s.count - 1].hole)) diff_push(&s, s.end, 1);
  return s.count;
}

static void rbd_dev_release(struct device *d) {
  image_close(d->impl);
  d->impl = NULL;
}

const struct device_ops rbd_ops = {
  .read = rbd_dev_read,
  .write = rbd_dev_write,
  .flush = rbd_dev_flush,
  .trim = rbd_dev_trim,
  .zero = rbd_dev_zero,
  .extents = rbd_dev_extents,
  .release = rbd_dev_release,
};

// ---- JavaScript: rbdOpen({ conf, user, keyFile?, pool, image, snapshot?, readOnly, timeoutSeconds }, onDone)

/** What JavaScript holds: the image until serve() takes it or rbdClose() closes it. */
struct box {
  struct image *image;
};

struct opening {
  char *conf, *user, *key_file, *pool, *name, *snapshot;
  int read_only;
  int64_t timeout;
  struct image *image;
  int error;
  char message[600];
  napi_async_work work;
  napi_ref callback;
};

static void opening_free(struct opening *o) {
  free(o->conf);
  free(o->user);
  free(o->key_file);
  free(o->pool);
  free(o->name);
  free(o->snapshot);
  free(o);
}

static int fail(struct opening *o, int r, const char *step) {
  o->error = -r;
  snprintf(o->message, sizeof o->message, "cannot %s: %s", step, strerror(-r));
  return r;
}

/** On libuv's thread pool. Nothing here names the key: only the file it is in. */
static void open_execute(napi_env env, void *data) {
  (void)env;
  struct opening *o = data;
  const char *why = loaded();
  if (why) {
    o->error = ENOSYS;
    snprintf(o->message, sizeof o->message, "%s", why);
    return;
  }
  struct image *im = calloc(1, sizeof *im);
  if (!im) {
    fail(o, -ENOMEM, "open the image");
    return;
  }
  char timeout[24];
  snprintf(timeout, sizeof timeout, "%lld", (long long)o->timeout);
  int r = lib.rados_create(&im->cluster, o->user);
  if (r < 0) {
    im->cluster = NULL;
    fail(o, r, "make a cluster handle");
  } else if ((r = lib.rados_conf_read_file(im->cluster, o->conf)) < 0) fail(o, r, "read the ceph.conf");
  else if (o->key_file && (r = lib.rados_conf_set(im->cluster, "keyfile", o->key_file)) < 0) fail(o, r, "set the key file");
  else if ((r = lib.rados_conf_set(im->cluster, "client_mount_timeout", timeout)) < 0 ||
           (r = lib.rados_conf_set(im->cluster, "rados_mon_op_timeout", timeout)) < 0) fail(o, r, "set the time limits");
  else if ((r = lib.rados_connect(im->cluster)) < 0) fail(o, r, "connect to the cluster");
  else if ((r = lib.rados_ioctx_create(im->cluster, o->pool, &im->io)) < 0) {
    im->io = NULL;
    fail(o, r, "open the pool");
  } else if ((r = (o->read_only ? lib.rbd_open_read_only : lib.rbd_open)(im->io, o->name, &im->image, o->snapshot)) < 0) {
    im->image = NULL;
    fail(o, r, "open the image");
  } else if ((r = lib.rbd_get_size(im->image, &im->size)) < 0) fail(o, r, "read the image's size");
  if (r < 0) {
    image_close(im);
    return;
  }
  o->image = im;
}

static void box_finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  struct box *b = data;
  image_close(b->image); // opened and never served nor closed
  free(b);
}

static void open_complete(napi_env env, napi_status status, void *data) {
  struct opening *o = data;
  napi_value callback, undefined, argv[2];
  napi_get_reference_value(env, o->callback, &callback);
  napi_get_undefined(env, &undefined);
  argv[0] = undefined;
  argv[1] = undefined;
  if (status != napi_ok && !o->error) fail(o, -ECANCELED, "open the image");
  if (o->image) {
    struct box *b = malloc(sizeof *b);
    if (b) {
      b->image = o->image;
      napi_value handle, size, result;
      napi_create_external(env, b, box_finalize, NULL, &handle);
      napi_create_double(env, (double)o->image->size, &size);
      napi_create_object(env, &result);
      napi_set_named_property(env, result, "handle", handle);
      napi_set_named_property(env, result, "size", size);
      argv[1] = result;
    } else {
      image_close(o->image);
      fail(o, -ENOMEM, "open the image");
    }
  }
  if (argv[1] == undefined) {
    napi_value message, code;
    napi_create_string_utf8(env, o->message, NAPI_AUTO_LENGTH, &message);
    napi_create_error(env, NULL, message, &argv[0]);
    napi_create_int32(env, o->error, &code);
    napi_set_named_property(env, argv[0], "errno", code);
  }
  napi_call_function(env, undefined, callback, 2, argv, NULL);
  napi_delete_reference(env, o->callback);
  napi_delete_async_work(env, o->work);
  opening_free(o);
}

/** A string property, or NULL when it is absent or undefined; 0 on a non-string. */
static int get_string(napi_env env, napi_value obj, const char *name, char **out) {
  napi_value v;
  napi_valuetype type;
  *out = NULL;
  if (napi_get_named_property(env, obj, name, &v) != napi_ok || napi_typeof(env, v, &type) != napi_ok) return 0;
  if (type == napi_undefined) return 1;
  if (type != napi_string) return 0;
  size_t length;
  napi_get_value_string_utf8(env, v, NULL, 0, &length);
  *out = malloc(length + 1);
  if (!*out) return 0;
  napi_get_value_string_utf8(env, v, *out, length + 1, &length);
  return 1;
}

static napi_value rbd_open_js(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  napi_valuetype type = napi_undefined;
  if (argc == 2) napi_typeof(env, argv[1], &type);
  if (type != napi_function) {
    napi_throw_error(env, NULL, "rbdOpen(options, onDone)");
    return NULL;
  }
  struct opening *o = calloc(1, sizeof *o);
  napi_value v;
  bool read_only = false;
  int64_t timeout = 30;
  if (!o) {
    napi_throw_error(env, NULL, "rbdOpen: out of memory");
    return NULL;
  }
  if (!get_string(env, argv[0], "conf", &o->conf) || !get_string(env, argv[0], "user", &o->user) ||
      !get_string(env, argv[0], "keyFile", &o->key_file) || !get_string(env, argv[0], "pool", &o->pool) ||
      !get_string(env, argv[0], "image", &o->name) || !get_string(env, argv[0], "snapshot", &o->snapshot) ||
      !o->conf || !o->user || !o->pool || !o->name ||
      napi_get_named_property(env, argv[0], "readOnly", &v) != napi_ok || napi_get_value_bool(env, v, &read_only) != napi_ok) {
    opening_free(o);
    napi_throw_error(env, NULL, "rbdOpen: conf, user, pool, image (strings) and readOnly are required");
    return NULL;
  }
  if (napi_get_named_property(env, argv[0], "timeoutSeconds", &v) == napi_ok) napi_get_value_int64(env, v, &timeout);
  o->read_only = read_only || o->snapshot != NULL; // a snapshot opens read-only at the snapshot
  o->timeout = timeout > 0 ? timeout : 30;
  napi_value name;
  napi_create_string_utf8(env, "kindling rbd open", NAPI_AUTO_LENGTH, &name);
  napi_create_reference(env, argv[1], 1, &o->callback);
  if (napi_create_async_work(env, NULL, name, open_execute, open_complete, o, &o->work) != napi_ok || napi_queue_async_work(env, o->work) != napi_ok) {
    napi_delete_reference(env, o->callback);
    opening_free(o);
    napi_throw_error(env, NULL, "rbdOpen: cannot queue the work");
  }
  return NULL;
}

static void *close_thread(void *arg) {
  image_close(arg);
  return NULL;
}

/** rbdClose(handle): an image opened and not served is closed (on a thread of its own). */
static napi_value rbd_close_js(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  void *data = NULL;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 1 || napi_get_value_external(env, argv[0], &data) != napi_ok || !data) {
    napi_throw_error(env, NULL, "rbdClose(handle)");
    return NULL;
  }
  struct box *b = data;
  struct image *im = b->image;
  b->image = NULL;
  if (im) {
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&t, &attr, close_thread, im) != 0) image_close(im);
    pthread_attr_destroy(&attr);
  }
  return NULL;
}

/** rbdAvailable(): null when librbd loads, else why it does not. */
static napi_value rbd_available_js(napi_env env, napi_callback_info info) {
  (void)info;
  const char *why = loaded();
  napi_value out;
  if (why) napi_create_string_utf8(env, why, NAPI_AUTO_LENGTH, &out);
  else napi_get_null(env, &out);
  return out;
}

int rbd_device_take(napi_env env, napi_value value, struct device *into) {
  void *data = NULL;
  if (napi_get_value_external(env, value, &data) != napi_ok || !data || !((struct box *)data)->image) {
    napi_throw_error(env, NULL, "serve: rbd is not an open image from rbdOpen()");
    return 0;
  }
  struct box *b = data;
  into->ops = &rbd_ops;
  into->fd = -1;
  into->impl = b->image;
  b->image = NULL;
  return 1;
}

void rbd_register(napi_env env, napi_value exports) {
  napi_value fn;
  napi_create_function(env, "rbdOpen", NAPI_AUTO_LENGTH, rbd_open_js, NULL, &fn);
  napi_set_named_property(env, exports, "rbdOpen", fn);
  napi_create_function(env, "rbdClose", NAPI_AUTO_LENGTH, rbd_close_js, NULL, &fn);
  napi_set_named_property(env, exports, "rbdClose", fn);
  napi_create_function(env, "rbdAvailable", NAPI_AUTO_LENGTH, rbd_available_js, NULL, &fn);
  napi_set_named_property(env, exports, "rbdAvailable", fn);
}
