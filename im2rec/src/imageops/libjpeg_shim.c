/*
 * Scaled JPEG decoding with libjpeg-turbo's decoder (the copy vendored and built by
 * the mozjpeg-sys crate): Huffman decoding, scaled IDCT (1/2, 1/4, 1/8) and colour
 * conversion straight into a caller-provided buffer.
 *
 * libjpeg reports fatal errors through error_exit, which must not return. Here it
 * longjmps back to the setjmp in im2rec_jpeg_decode_scaled, inside this C function:
 * no jump or unwinding ever crosses into Rust, and the process never exits. Warnings
 * (a truncated file, corrupt entropy data) are counted, not printed: the caller
 * treats them as failures, because libjpeg would pad or guess the missing pixels.
 */
#include <setjmp.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "jpeglib.h"

/* Return codes, mirrored in libjpeg.rs. */
#define SHIM_OK 0
#define SHIM_ERROR 1       /* libjpeg's fatal error; message in msg */
#define SHIM_WARNING 2     /* decoded, but libjpeg warned (first warning in msg) */
#define SHIM_UNSUPPORTED 3 /* colour space we leave to the other decoder */
#define SHIM_GEOMETRY 4    /* output size or channels differ from what the caller expects */

struct shim_error {
  struct jpeg_error_mgr pub;
  jmp_buf jump;
  char *msg;
  size_t msg_len;
};

static void store_message(j_common_ptr cinfo) {
  struct shim_error *err = (struct shim_error *)cinfo->err;
  char buffer[JMSG_LENGTH_MAX];
  buffer[0] = '\0';
  cinfo->err->format_message(cinfo, buffer);
  if (err->msg != NULL && err->msg_len > 0) {
    strncpy(err->msg, buffer, err->msg_len - 1);
    err->msg[err->msg_len - 1] = '\0';
  }
}

static void shim_error_exit(j_common_ptr cinfo) {
  store_message(cinfo);
  longjmp(((struct shim_error *)cinfo->err)->jump, 1);
}

static void shim_emit_message(j_common_ptr cinfo, int msg_level) {
  if (msg_level < 0) {
    if (cinfo->err->num_warnings == 0) store_message(cinfo);
    cinfo->err->num_warnings++;
  }
}

static void shim_output_message(j_common_ptr cinfo) { (void)cinfo; }

/*
 * Zero `cinfo` and `err` and route libjpeg's errors and warnings to `err` (messages
 * into `msg`). The caller still sets its own setjmp before any libjpeg call: the
 * jump must land in the frame that calls libjpeg.
 */
static void shim_init(struct jpeg_decompress_struct *cinfo, struct shim_error *err, char *msg,
                      size_t msg_len) {
  memset(cinfo, 0, sizeof(*cinfo));
  memset(err, 0, sizeof(*err));
  if (msg != NULL && msg_len > 0) msg[0] = '\0';
  err->msg = msg;
  err->msg_len = msg_len;
  cinfo->err = jpeg_std_error(&err->pub);
  err->pub.error_exit = shim_error_exit;
  err->pub.emit_message = shim_emit_message;
  err->pub.output_message = shim_output_message;
}

/* Grey, YCbCr and RGB files are decoded here; CMYK/YCCK are left to other decoders. */
static int shim_supported_color_space(const struct jpeg_decompress_struct *cinfo) {
  switch (cinfo->jpeg_color_space) {
    case JCS_GRAYSCALE:
    case JCS_YCbCr:
    case JCS_RGB:
      return 1;
    default:
      return 0;
  }
}

/*
 * Read the headers of `data`: image size and whether it is stored as one grey
 * component. SHIM_UNSUPPORTED for colour spaces other than grey, YCbCr and RGB.
 */
int im2rec_jpeg_read_header(const unsigned char *data, size_t len, unsigned *width,
                            unsigned *height, int *gray, char *msg, size_t msg_len) {
  struct jpeg_decompress_struct cinfo;
  struct shim_error err;
  int status;

  shim_init(&cinfo, &err, msg, msg_len);
  if (setjmp(err.jump)) {
    jpeg_destroy_decompress(&cinfo);
    return SHIM_ERROR;
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, data, (unsigned long)len);
  jpeg_read_header(&cinfo, TRUE);
  if (!shim_supported_color_space(&cinfo)) {
    jpeg_destroy_decompress(&cinfo);
    return SHIM_UNSUPPORTED;
  }
  *width = cinfo.image_width;
  *height = cinfo.image_height;
  *gray = cinfo.jpeg_color_space == JCS_GRAYSCALE;
  status = err.pub.num_warnings > 0 ? SHIM_WARNING : SHIM_OK;
  jpeg_destroy_decompress(&cinfo);
  return status;
}

/*
 * Decode `data` at 1/`scale` (1, 2, 4 or 8) as grey (`gray` != 0) or RGB into `out`,
 * which must hold exactly want_w * want_h * channels bytes, rows packed. On failure
 * a NUL-terminated message is written to `msg` (at most msg_len bytes).
 */
int im2rec_jpeg_decode_scaled(const unsigned char *data, size_t len, unsigned scale, int gray,
                              unsigned want_w, unsigned want_h, unsigned char *out,
                              size_t out_len, char *msg, size_t msg_len) {
  struct jpeg_decompress_struct cinfo;
  struct shim_error err;
  JSAMPROW rows[16];
  size_t stride;
  int channels = gray ? 1 : 3;
  int status;

  shim_init(&cinfo, &err, msg, msg_len);
  if (setjmp(err.jump)) {
    jpeg_destroy_decompress(&cinfo);
    return SHIM_ERROR;
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, data, (unsigned long)len);
  jpeg_read_header(&cinfo, TRUE);
  if (!shim_supported_color_space(&cinfo)) {
    jpeg_destroy_decompress(&cinfo);
    return SHIM_UNSUPPORTED;
  }
  cinfo.out_color_space = gray ? JCS_GRAYSCALE : JCS_RGB;
  cinfo.scale_num = 1;
  cinfo.scale_denom = scale;
  jpeg_start_decompress(&cinfo);
  stride = (size_t)want_w * (size_t)channels;
  if (cinfo.output_width != want_w || cinfo.output_height != want_h ||
      cinfo.output_components != channels || stride * (size_t)want_h != out_len) {
    jpeg_destroy_decompress(&cinfo);
    return SHIM_GEOMETRY;
  }
  while (cinfo.output_scanline < cinfo.output_height) {
    JDIMENSION first = cinfo.output_scanline;
    JDIMENSION n = cinfo.output_height - first;
    JDIMENSION i;
    if (n > 16) n = 16;
    for (i = 0; i < n; i++) rows[i] = out + (size_t)(first + i) * stride;
    jpeg_read_scanlines(&cinfo, rows, n);
  }
  jpeg_finish_decompress(&cinfo);
  status = err.pub.num_warnings > 0 ? SHIM_WARNING : SHIM_OK;
  jpeg_destroy_decompress(&cinfo);
  return status;
}
