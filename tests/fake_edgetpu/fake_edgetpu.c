/*
 * A stand-in for libedgetpu.so.1 on machines without an Edge TPU. It exports
 * the TFLite external-delegate entry points the real library exports, and
 * does what the test asks through $FAKE_EDGETPU_MODE:
 *
 *   nodevice   (default) no delegate: "no Edge TPU device found", as the real
 *              library answers with nothing attached
 *   ok         a working delegate: it claims every "edgetpu-custom-op" node of a
 *              model and runs it as a no-op (outputs stay as allocated, zeros)
 *   crash      SIGSEGV while the delegate prepares a graph, as a libedgetpu built
 *              for another TensorFlow version does
 *   hang       never return from preparing a graph
 *   abort:N    abort() on the Nth invoke (a USB transfer failing LOG(FATAL)s)
 *   hang:N     never return from the Nth invoke (a stuck device)
 *   error:N    fail every invoke from the Nth on (a PCIe device gone bad)
 *   openhang:N sleep N s while opening the device, then find none: what libedgetpu
 *              does when the user may not open a USB Coral (25 tries, 1 s apart)
 *   slow:N     a working delegate whose every invoke takes N ms more (a slower device)
 *
 * With $FAKE_EDGETPU_OUTPUT naming a file, every invoke of a claimed node writes
 * that file's bytes into the node's first output tensor: a device that answers
 * (the right bytes, or wrong ones). Without it the outputs stay zeros.
 *
 * Like the real library it exports edgetpu_version() and edgetpu_verbosity(); at
 * verbosity 1 or more it prints its reason for not opening a device to stderr.
 *
 * With $FAKE_EDGETPU_MODE_FILE set, the mode is read from that file at every
 * call instead, so a test can repair (or break) the "device" while a run goes on.
 *
 * Several devices: $FAKE_EDGETPU_DEVICES lists those attached ("usb:0,usb:1,pci:0").
 * The create-delegate call's "device" option picks one as libedgetpu does ("" the
 * first, "usb" the first USB one, "usb:N" the Nth USB one, ":N" the Nth of all);
 * one not in the list is "no Edge TPU device found". Without the list, any device
 * string is taken as given. Once a process has opened a device, its mode is looked
 * up per device first: a "%s" in $FAKE_EDGETPU_MODE_FILE becomes the device with
 * ':' as '_' ("mode-usb_1"), then $FAKE_EDGETPU_MODE_usb_1, then the common mode.
 * So a test can unplug one device while another works.
 *
 * Each event is appended to $FAKE_EDGETPU_LOG with this process's id:
 * "create device=..", "prepare claimed=N", "invoke".
 *
 * The structs below follow TFLite's tensorflow/lite/core/c/common.h: the
 * leading, ABI-stable fields of what a delegate touches, and TfLiteTensor whole
 * (its size is the stride of the context's tensor array).
 */
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <stddef.h>
#include <string.h>
#include <unistd.h>

typedef enum { kTfLiteOk = 0, kTfLiteError = 1 } TfLiteStatus;

typedef struct {
  int size;
  int data[];
} TfLiteIntArray;

struct TfLiteContext;
struct TfLiteDelegate;

typedef struct {
  TfLiteIntArray* inputs;
  TfLiteIntArray* outputs;
} TfLiteNodeHead;

typedef struct {
  float scale;
  int32_t zero_point;
} TfLiteQuantizationParams;

typedef struct {
  int type;
  void* params;
} TfLiteQuantization;

typedef struct {
  int type;
  void* data;
  TfLiteIntArray* dims;
  TfLiteQuantizationParams params;
  int allocation_type;
  size_t bytes;
  const void* allocation;
  const char* name;
  void* delegate;
  int buffer_handle;
  _Bool data_is_stale;
  _Bool is_variable;
  TfLiteQuantization quantization;
  void* sparsity;
  const TfLiteIntArray* dims_signature;
} TfLiteTensor;

typedef struct TfLiteRegistration {
  void* (*init)(struct TfLiteContext*, const char*, size_t);
  void (*free)(struct TfLiteContext*, void*);
  TfLiteStatus (*prepare)(struct TfLiteContext*, void*);
  TfLiteStatus (*invoke)(struct TfLiteContext*, void*);
  const char* (*profiling_string)(const struct TfLiteContext*, const void*);
  int32_t builtin_code;
  const char* custom_name;
  int version;
  void* registration_external;
  void* async_kernel;
  uint64_t inplace_operator;
  /* Room for fields newer runtimes may add: passed by value, read by size. */
  uint64_t reserved[8];
} TfLiteRegistration;

typedef struct TfLiteContext {
  size_t tensors_size;
  TfLiteStatus (*GetExecutionPlan)(struct TfLiteContext*, TfLiteIntArray**);
  TfLiteTensor* tensors;
  void* impl_;
  void* ResizeTensor;
  void (*ReportError)(struct TfLiteContext*, const char*, ...);
  void* AddTensors;
  TfLiteStatus (*GetNodeAndRegistration)(struct TfLiteContext*, int, TfLiteNodeHead**,
                                         TfLiteRegistration**);
  TfLiteStatus (*ReplaceNodeSubsetsWithDelegateKernels)(struct TfLiteContext*,
                                                        TfLiteRegistration,
                                                        const TfLiteIntArray*,
                                                        struct TfLiteDelegate*);
} TfLiteContext;

typedef struct TfLiteDelegate {
  void* data_;
  TfLiteStatus (*Prepare)(TfLiteContext*, struct TfLiteDelegate*);
  void* CopyFromBufferHandle;
  void* CopyToBufferHandle;
  void* FreeBufferHandle;
  int64_t flags;
  void* opaque_delegate_builder;
} TfLiteDelegate;

/* Marks this file as the stand-in, for messages that name the runtime's version. */
const char fake_edgetpu_version[] = "BuildLabel(fake-for-tests), RuntimeVersion(14)";

static long invokes = 0;
static int verbosity = 0;
/* The device this process opened, ':' as '_' ("usb_1"); empty before it opened one. */
static char device_key[64] = "";

static void note(const char* what) {
  const char* path = getenv("FAKE_EDGETPU_LOG");
  if (path == NULL) return;
  FILE* f = fopen(path, "a");
  if (f == NULL) return;
  fprintf(f, "%d %s\n", (int)getpid(), what);
  fclose(f);
}

static const char* read_mode(const char* path) {
  static char from_file[64];
  FILE* f = fopen(path, "r");
  if (f == NULL) return NULL;
  size_t n = fread(from_file, 1, sizeof from_file - 1, f);
  fclose(f);
  while (n > 0 && (from_file[n - 1] == '\n' || from_file[n - 1] == ' ')) n--;
  from_file[n] = '\0';
  return from_file;
}

static const char* mode(void) {
  const char* path = getenv("FAKE_EDGETPU_MODE_FILE");
  if (path != NULL) {
    const char* hole = strstr(path, "%s");
    if (hole == NULL) {
      const char* m = read_mode(path);
      if (m != NULL) return m;
    } else if (device_key[0] != '\0') {
      char per_device[512];
      snprintf(per_device, sizeof per_device, "%.*s%s%s", (int)(hole - path), path,
               device_key, hole + 2);
      const char* m = read_mode(per_device);
      if (m != NULL) return m;
    }
  }
  if (device_key[0] != '\0') {
    char name[96];
    snprintf(name, sizeof name, "FAKE_EDGETPU_MODE_%s", device_key);
    const char* m = getenv(name);
    if (m != NULL) return m;
  }
  const char* m = getenv("FAKE_EDGETPU_MODE");
  return m != NULL ? m : "nodevice";
}

/* The N of "name:N" when the mode is that one, else 0. */
static long nth(const char* name) {
  size_t n = strlen(name);
  const char* m = mode();
  if (strncmp(m, name, n) != 0 || m[n] != ':') return 0;
  return atol(m + n + 1);
}

static TfLiteStatus kernel_prepare(TfLiteContext* context, void* node) {
  (void)context;
  (void)node;
  return kTfLiteOk;
}

/* Copies $FAKE_EDGETPU_OUTPUT into the node's first output; 0 when not asked to. */
static int replay(TfLiteContext* context, TfLiteNodeHead* node) {
  const char* path = getenv("FAKE_EDGETPU_OUTPUT");
  if (path == NULL) return 0;
  if (node->outputs == NULL || node->outputs->size < 1) return -1;
  TfLiteTensor* out = &context->tensors[node->outputs->data[0]];
  FILE* f = fopen(path, "rb");
  if (f == NULL) return -1;
  unsigned char buf[65536];
  size_t n = fread(buf, 1, sizeof buf, f);
  fclose(f);
  if (out->data == NULL || n != out->bytes) return -1;
  memcpy(out->data, buf, n);
  return 0;
}

static TfLiteStatus kernel_invoke(TfLiteContext* context, void* node) {
  invokes++;
  note("invoke");
  if (nth("slow") > 0) usleep((useconds_t)(nth("slow") * 1000));
  if (nth("abort") && invokes >= nth("abort")) abort();
  if (nth("hang") && invokes >= nth("hang")) {
    for (;;) pause();
  }
  if (nth("error") && invokes >= nth("error")) {
    context->ReportError(context, "fake libedgetpu: Edge TPU transfer failed");
    return kTfLiteError;
  }
  if (replay(context, (TfLiteNodeHead*)node) != 0) {
    context->ReportError(context, "fake libedgetpu: FAKE_EDGETPU_OUTPUT does not fit the output");
    return kTfLiteError;
  }
  return kTfLiteOk;
}

static TfLiteStatus delegate_prepare(TfLiteContext* context, TfLiteDelegate* delegate) {
  if (strcmp(mode(), "crash") == 0) raise(SIGSEGV);
  if (strcmp(mode(), "hang") == 0) {
    for (;;) pause();
  }
  TfLiteIntArray* plan = NULL;
  if (context->GetExecutionPlan(context, &plan) != kTfLiteOk) return kTfLiteError;
  TfLiteIntArray* claimed = malloc(sizeof(TfLiteIntArray) + sizeof(int) * (size_t)plan->size);
  claimed->size = 0;
  for (int i = 0; i < plan->size; i++) {
    TfLiteNodeHead* node = NULL;
    TfLiteRegistration* reg = NULL;
    if (context->GetNodeAndRegistration(context, plan->data[i], &node, &reg) != kTfLiteOk) {
      free(claimed);
      return kTfLiteError;
    }
    if (reg->custom_name != NULL && strcmp(reg->custom_name, "edgetpu-custom-op") == 0) {
      claimed->data[claimed->size++] = plan->data[i];
    }
  }
  char line[64];
  snprintf(line, sizeof line, "prepare claimed=%d", claimed->size);
  note(line);
  TfLiteStatus status = kTfLiteOk;
  if (claimed->size > 0) {
    TfLiteRegistration kernel;
    memset(&kernel, 0, sizeof kernel);
    kernel.prepare = kernel_prepare;
    kernel.invoke = kernel_invoke;
    kernel.custom_name = "fake-edgetpu";
    kernel.version = 1;
    status = context->ReplaceNodeSubsetsWithDelegateKernels(context, kernel, claimed, delegate);
  }
  free(claimed);
  return status;
}

/* The attached device that a "device" option names, as libedgetpu picks it, copied
 * into out; 0 when none is attached there. Without $FAKE_EDGETPU_DEVICES, the
 * option itself. */
static int pick_device(const char* wanted, char* out, size_t size) {
  const char* attached = getenv("FAKE_EDGETPU_DEVICES");
  if (attached == NULL) {
    snprintf(out, size, "%s", wanted);
    return 1;
  }
  char kind[8] = "";
  long index = -1; /* any */
  const char* colon = strchr(wanted, ':');
  if (colon != NULL) {
    snprintf(kind, sizeof kind, "%.*s", (int)(colon - wanted), wanted);
    index = atol(colon + 1);
  } else {
    snprintf(kind, sizeof kind, "%s", wanted);
  }
  char list[256];
  snprintf(list, sizeof list, "%s", attached);
  long seen = 0;
  for (char* save = NULL, *item = strtok_r(list, ",", &save); item != NULL;
       item = strtok_r(NULL, ",", &save)) {
    if (kind[0] != '\0' && strncmp(item, kind, strlen(kind)) != 0) continue;
    if (index < 0 || seen == index) {
      snprintf(out, size, "%s", item);
      return 1;
    }
    seen++;
  }
  return 0;
}

void* tflite_plugin_create_delegate(char** keys, char** values, size_t n,
                                    void (*report_error)(const char*)) {
  char line[256] = "create";
  const char* wanted = "";
  for (size_t i = 0; i < n; i++) {
    size_t used = strlen(line);
    snprintf(line + used, sizeof line - used, " %s=%s", keys[i], values[i]);
    if (strcmp(keys[i], "device") == 0) wanted = values[i];
  }
  note(line);
  char device[64];
  int attached = pick_device(wanted, device, sizeof device);
  if (attached) {
    snprintf(device_key, sizeof device_key, "%s", device);
    for (char* c = device_key; *c != '\0'; c++) {
      if (*c == ':') *c = '_';
    }
  }
  long hang = nth("openhang");
  if (hang > 0) {
    sleep((unsigned)hang);
    if (verbosity >= 1) {
      fprintf(stderr, "fake libedgetpu: LIBUSB_ERROR_ACCESS: gave up opening after %ld s\n",
              hang);
    }
    return NULL; /* the real library reports nothing through report_error */
  }
  if (!attached || strcmp(mode(), "nodevice") == 0) {
    if (report_error != NULL) report_error("fake libedgetpu: no Edge TPU device found");
    return NULL;
  }
  TfLiteDelegate* delegate = calloc(1, sizeof(TfLiteDelegate));
  delegate->data_ = (void*)fake_edgetpu_version;
  delegate->Prepare = delegate_prepare;
  delegate->flags = 1; /* kTfLiteDelegateFlagsAllowDynamicTensors: prepared before allocation */
  return delegate;
}

void tflite_plugin_destroy_delegate(void* delegate) { free(delegate); }

const char* edgetpu_version(void) {
  const char* v = getenv("FAKE_EDGETPU_VERSION");
  return v != NULL ? v : fake_edgetpu_version;
}

void edgetpu_verbosity(int level) { verbosity = level; }
