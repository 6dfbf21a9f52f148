/*
 * A stand-in for libedgetpu.so.1 on machines without an Edge TPU: it exports
 * the TFLite external-delegate entry points, records the options it is given
 * to $FAKE_EDGETPU_LOG, and reports that no device was found (NULL), exactly
 * as the real library does when no accelerator is attached.
 */
#include <stdio.h>
#include <stdlib.h>
#include <stddef.h>

void *tflite_plugin_create_delegate(char **keys, char **values, size_t n,
                                    void (*report_error)(const char *)) {
  const char *path = getenv("FAKE_EDGETPU_LOG");
  if (path != NULL) {
    FILE *f = fopen(path, "a");
    if (f != NULL) {
      fprintf(f, "create");
      for (size_t i = 0; i < n; i++) fprintf(f, " %s=%s", keys[i], values[i]);
      fprintf(f, "\n");
      fclose(f);
    }
  }
  if (report_error != NULL) report_error("fake libedgetpu: no Edge TPU device found");
  return NULL;
}

void tflite_plugin_destroy_delegate(void *delegate) { (void)delegate; }
