// The file device of the native data path: a file read and written by the descriptor the
// file driver's BlockDevice holds (its `native` target). Past the file's end reads as zeroes.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "device.h"

static int file_read(struct device *d, unsigned char *into, size_t n, uint64_t offset) {
  size_t done = 0;
  while (done < n) {
    ssize_t r = pread(d->fd, into + done, n - done, (off_t)(offset + done));
    if (r < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    if (r == 0) break;
    done += (size_t)r;
  }
  // The file ends before the device does: what lies past its end reads as zeroes.
  if (done < n) memset(into + done, 0, n - done);
  return 0;
}

static int file_write(struct device *d, const unsigned char *from, size_t n, uint64_t offset) {
  size_t done = 0;
  while (done < n) {
    ssize_t w = pwrite(d->fd, from + done, n - done, (off_t)(offset + done));
    if (w < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    done += (size_t)w;
  }
  return 0;
}

static int file_flush(struct device *d) {
  return fdatasync(d->fd);
}

static off_t file_size(int fd) {
  struct stat st;
  return fstat(fd, &st) == 0 ? st.st_size : -1;
}

static int file_trim(struct device *d, uint64_t offset, uint64_t length) {
  if (length == 0) return 0;
  return fallocate(d->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)offset, (off_t)length);
}

/** Zeroes [offset, offset+length) by writing zeroes: where fallocate cannot. */
static int write_zeroes(struct device *d, uint64_t offset, uint64_t length) {
  static const unsigned char zeroes[65536];
  while (length > 0) {
    size_t n = length < sizeof zeroes ? (size_t)length : sizeof zeroes;
    if (file_write(d, zeroes, n, offset) < 0) return -1;
    offset += n;
    length -= n;
  }
  return 0;
}

static int file_zero(struct device *d, uint64_t offset, uint64_t length, int may_trim) {
  // Past the file's end already reads as zeroes; zeroing there would allocate blocks beyond
  // the end (keep-size) that nothing can ever read.
  off_t end = file_size(d->fd);
  if (end < 0) return -1;
  if ((uint64_t)end <= offset) return 0;
  if (offset + length > (uint64_t)end) length = (uint64_t)end - offset;
  int mode = may_trim ? FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE : FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE;
  if (fallocate(d->fd, mode, (off_t)offset, (off_t)length) == 0) return 0;
  if (errno != EOPNOTSUPP) return -1;
  return write_zeroes(d, offset, length);
}

/** Allocation from SEEK_DATA and SEEK_HOLE. */
static int file_extents(struct device *d, uint64_t offset, uint64_t length, int limit, struct extent *out) {
  uint64_t at = offset, end = offset + length;
  int count = 0;
  off_t size = file_size(d->fd);
  if (size < 0) return -1;
  while (at < end && count < limit) {
    uint64_t next;
    int hole;
    if (at >= (uint64_t)size) {
      next = end; // past the file's end reads as zeroes, as a hole does
      hole = 1;
    } else {
      off_t data = lseek(d->fd, (off_t)at, SEEK_DATA);
      if (data < 0 && errno != ENXIO) return -1;
      if (data < 0) data = size;
      if ((uint64_t)data > at) {
        next = (uint64_t)data;
        hole = 1;
      } else {
        off_t h = lseek(d->fd, (off_t)at, SEEK_HOLE);
        if (h < 0) return -1;
        next = (uint64_t)h;
        hole = 0;
      }
      if (next > end) next = end;
    }
    out[count].length = next - at;
    out[count].hole = hole;
    count++;
    at = next;
  }
  return count;
}

static void file_release(struct device *d) {
  (void)d; // the descriptor is JavaScript's: closed there, after the report
}

const struct device_ops file_ops = {
  .read = file_read,
  .write = file_write,
  .flush = file_flush,
  .trim = file_trim,
  .zero = file_zero,
  .extents = file_extents,
  .release = file_release,
};
