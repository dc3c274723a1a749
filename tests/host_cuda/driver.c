// A stand-in for the CUDA driver (libcuda) and NVRTC (libnvrtc) that runs on the host, for
// testing rgnn's CUDA backend end to end where there is no GPU (tests/cuda_host_driver.rs).
//
// It implements the subset of the two APIs that cudarc calls for rgnn, with the rules of the
// real ones that rgnn's use of them depends on, and refuses anything else loudly:
// - "device memory" is host memory; every copy, memset and kernel argument is checked against
//   the live allocations, a kernel writing past an allocation's end is caught by a guard band
//   after it, and a budget (RGNN_HOST_CUDA_MEMORY bytes, default 1 GiB) makes
//   allocations fail with CUDA_ERROR_OUT_OF_MEMORY;
// - stream capture is refused on the legacy stream and during another capture, as is a kernel's
//   first launch inside a capture (lazy loading on drivers before CUDA 12.3); work on a
//   capturing stream is recorded (kernels only: anything else is refused), synchronising with
//   it invalidates the capture, and a graph replays its kernels in order
//   (RGNN_HOST_CUDA_CAPTURE_DELAY_MS slows each captured launch, to let races show);
// - NVRTC "compiles" CUDA C by checking the options and returning the source as its "PTX";
//   loading it as a module compiles it as host C++ (the generated code's host emulation,
//   with the launcher RGNN_HOST_CUDA_LAUNCHER names), and a launch runs it, one host thread
//   per CUDA thread. A "PTX" that is not from this stand-in fails to load (CUDA_ERROR_INVALID_PTX).
// Work runs when it is submitted, so every stream is always idle and events record host time.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef int CUresult;
typedef unsigned long long CUdeviceptr;
enum {
    CUDA_SUCCESS = 0,
    CUDA_ERROR_INVALID_VALUE = 1,
    CUDA_ERROR_OUT_OF_MEMORY = 2,
    CUDA_ERROR_NOT_INITIALIZED = 3,
    CUDA_ERROR_INVALID_DEVICE = 101,
    CUDA_ERROR_INVALID_PTX = 218,
    CUDA_ERROR_INVALID_HANDLE = 400,
    CUDA_ERROR_NOT_FOUND = 500,
    CUDA_ERROR_NOT_READY = 600,
    CUDA_ERROR_LAUNCH_FAILED = 719,
    CUDA_ERROR_ILLEGAL_ADDRESS = 700,
    CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES = 701,
    CUDA_ERROR_NOT_SUPPORTED = 801,
    CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED = 900,
    CUDA_ERROR_STREAM_CAPTURE_INVALIDATED = 901,
};

static const char* PTX_MARK = "// rgnn host stand-in PTX\n";
static const char* DEVICE_NAME = "rgnn host stand-in (no GPU)";
static const int ARCH_MAJOR = 8, ARCH_MINOR = 0;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int initialised;

static CUresult complain(CUresult code, const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "host CUDA stand-in: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    return code;
}

// ---- memory ----
// Every allocation is followed by a guard band; a kernel that writes past an allocation's end
// is reported after its launch (CUDA_ERROR_ILLEGAL_ADDRESS).
enum { GUARD = 256, GUARD_BYTE = 0xCD };
typedef struct { char* base; size_t bytes; } Allocation;
static Allocation* allocations;
static size_t n_allocations, cap_allocations, used_bytes;

static size_t budget(void) {
    const char* v = getenv("RGNN_HOST_CUDA_MEMORY");
    return v ? (size_t)strtoull(v, 0, 10) : ((size_t)1 << 30);
}

// The allocation holding [p, p + bytes), or -1.
static long find_allocation(CUdeviceptr p, size_t bytes) {
    for (size_t i = 0; i < n_allocations; i++) {
        uintptr_t b = (uintptr_t)allocations[i].base;
        if (p >= b && p + bytes <= b + allocations[i].bytes && p + bytes >= p) return (long)i;
    }
    return -1;
}

static CUresult mem_alloc(CUdeviceptr* out, size_t bytes) {
    if (!initialised) return CUDA_ERROR_NOT_INITIALIZED;
    if (!out || bytes == 0) return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&lock);
    CUresult r = CUDA_SUCCESS;
    if (used_bytes + bytes > budget()) {
        r = CUDA_ERROR_OUT_OF_MEMORY;
    } else {
        char* p = aligned_alloc(256, (bytes + GUARD + 255) / 256 * 256);
        if (!p) {
            r = CUDA_ERROR_OUT_OF_MEMORY;
        } else {
            // Device memory starts with whatever was there: here all ones, a NaN in every float type.
            memset(p, 0xFF, bytes);
            memset(p + bytes, GUARD_BYTE, GUARD);
            if (n_allocations == cap_allocations) {
                cap_allocations = cap_allocations ? 2 * cap_allocations : 64;
                allocations = realloc(allocations, cap_allocations * sizeof(Allocation));
            }
            allocations[n_allocations++] = (Allocation){p, bytes};
            used_bytes += bytes;
            *out = (CUdeviceptr)(uintptr_t)p;
        }
    }
    pthread_mutex_unlock(&lock);
    return r;
}

static CUresult mem_free(CUdeviceptr p) {
    pthread_mutex_lock(&lock);
    for (size_t i = 0; i < n_allocations; i++) {
        if ((uintptr_t)allocations[i].base == p) {
            free(allocations[i].base);
            used_bytes -= allocations[i].bytes;
            allocations[i] = allocations[--n_allocations];
            pthread_mutex_unlock(&lock);
            return CUDA_SUCCESS;
        }
    }
    pthread_mutex_unlock(&lock);
    return complain(CUDA_ERROR_INVALID_VALUE, "freeing %#llx, which is not an allocation", p);
}

static CUresult check_range(CUdeviceptr p, size_t bytes, const char* what) {
    pthread_mutex_lock(&lock);
    long a = find_allocation(p, bytes);
    pthread_mutex_unlock(&lock);
    return a < 0 ? complain(CUDA_ERROR_INVALID_VALUE, "%s: %zu bytes at %#llx are not inside one allocation", what, bytes, p)
                 : CUDA_SUCCESS;
}

// ---- modules and kernels ----
typedef int (*HostLaunch)(unsigned, unsigned, unsigned, unsigned, unsigned, void**);
typedef struct { void* library; HostLaunch launch; unsigned params; } Module;
// `loaded`: launched once outside a capture. Like a driver before CUDA 12.3 with lazy loading
// (the default since 12.2), a kernel's first launch may not be inside a stream capture.
typedef struct { Module* module; int loaded; } Function;

static char* read_file(const char* path, size_t* len) {
    FILE* f = fopen(path, "rb");
    if (!f) return 0;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char* text = malloc((size_t)n + 1);
    size_t got = fread(text, 1, (size_t)n, f);
    fclose(f);
    text[got] = 0;
    if (len) *len = got;
    return text;
}

// ---- streams, events, graphs ----
typedef struct {
    Function* function;
    unsigned grid[3], block[3];
    unsigned n_params;
    uint64_t params[64];
} KernelNode;
typedef struct { KernelNode* nodes; size_t n, cap; } NodeList;
typedef struct {
    unsigned flags;
    int capturing, invalidated;
    NodeList captured;
} Stream;
typedef struct { unsigned flags; int recorded; double ms; } Event;
typedef struct { NodeList nodes; } Graph;

static int captures_in_progress;

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static void push_node(NodeList* l, KernelNode k) {
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 16;
        l->nodes = realloc(l->nodes, l->cap * sizeof(KernelNode));
    }
    l->nodes[l->n++] = k;
}

// A stream handle: 0 (legacy), 1 (CU_STREAM_LEGACY), 2 (CU_STREAM_PER_THREAD) or one of ours.
static int is_legacy(void* s) { return (uintptr_t)s <= 2; }

// Work on `s` that the stand-in only runs, never records: refused while `s` captures (the
// capture is then invalid, as the real driver does for an unsupported operation).
static CUresult refuse_if_capturing(void* s, const char* what) {
    if (is_legacy(s)) {
        if (captures_in_progress) return complain(CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED, "%s on the legacy stream during a capture", what);
        return CUDA_SUCCESS;
    }
    Stream* st = s;
    if (st->capturing) {
        st->invalidated = 1;
        return complain(CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED, "%s on a capturing stream", what);
    }
    return CUDA_SUCCESS;
}

static CUresult check_guards(void) {
    CUresult r = CUDA_SUCCESS;
    pthread_mutex_lock(&lock);
    for (size_t i = 0; i < n_allocations && !r; i++)
        for (size_t b = 0; b < GUARD; b++)
            if ((unsigned char)allocations[i].base[allocations[i].bytes + b] != GUARD_BYTE) {
                r = complain(CUDA_ERROR_ILLEGAL_ADDRESS, "a kernel wrote %zu bytes past the end of the %zu-byte allocation %p", b,
                             allocations[i].bytes, (void*)allocations[i].base);
                break;
            }
    pthread_mutex_unlock(&lock);
    return r;
}

static CUresult run_kernel(const KernelNode* k) {
    void* params[64];
    for (unsigned i = 0; i < k->n_params; i++) params[i] = (void*)&k->params[i];
    int status = k->function->module->launch(k->grid[0], k->grid[1], k->grid[2], k->block[0], k->block[1], params);
    return status == 0 ? check_guards() : complain(CUDA_ERROR_LAUNCH_FAILED, "a kernel's threads could not be started");
}

// ---- the driver API ----
CUresult cuInit(unsigned flags) {
    if (flags != 0) return CUDA_ERROR_INVALID_VALUE;
    initialised = 1;
    return CUDA_SUCCESS;
}
CUresult cuDriverGetVersion(int* v) { *v = 12080; return CUDA_SUCCESS; }
CUresult cuDeviceGet(int* d, int ordinal) {
    if (!initialised) return CUDA_ERROR_NOT_INITIALIZED;
    if (ordinal != 0) return CUDA_ERROR_INVALID_DEVICE;
    *d = 0;
    return CUDA_SUCCESS;
}
CUresult cuDeviceGetName(char* name, int len, int d) {
    if (d != 0) return CUDA_ERROR_INVALID_DEVICE;
    snprintf(name, (size_t)len, "%s", DEVICE_NAME);
    return CUDA_SUCCESS;
}
CUresult cuDeviceGetAttribute(int* v, int attribute, int d) {
    if (d != 0) return CUDA_ERROR_INVALID_DEVICE;
    switch (attribute) {
    case 16: *v = 4; return CUDA_SUCCESS;            // multiprocessors
    case 75: *v = ARCH_MAJOR; return CUDA_SUCCESS;   // compute capability
    case 76: *v = ARCH_MINOR; return CUDA_SUCCESS;
    case 115: *v = 1; return CUDA_SUCCESS;           // memory pools (cuMemAllocAsync)
    default: return complain(CUDA_ERROR_INVALID_VALUE, "device attribute %d is not modelled", attribute);
    }
}
static int the_context;
CUresult cuDevicePrimaryCtxRetain(void** ctx, int d) {
    if (d != 0) return CUDA_ERROR_INVALID_DEVICE;
    *ctx = &the_context;
    return CUDA_SUCCESS;
}
CUresult cuDevicePrimaryCtxRelease_v2(int d) { return d == 0 ? CUDA_SUCCESS : CUDA_ERROR_INVALID_DEVICE; }
static __thread void* current_context;
CUresult cuCtxSetCurrent(void* ctx) {
    if (ctx && ctx != &the_context) return CUDA_ERROR_INVALID_HANDLE;
    current_context = ctx;
    return CUDA_SUCCESS;
}
CUresult cuCtxGetCurrent(void** ctx) { *ctx = current_context; return CUDA_SUCCESS; }
CUresult cuCtxSynchronize(void) {
    if (captures_in_progress) return complain(CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED, "context synchronised during a capture");
    return CUDA_SUCCESS;
}
CUresult cuMemGetInfo_v2(size_t* free_bytes, size_t* total) {
    pthread_mutex_lock(&lock);
    *total = budget();
    *free_bytes = *total > used_bytes ? *total - used_bytes : 0;
    pthread_mutex_unlock(&lock);
    return CUDA_SUCCESS;
}

CUresult cuStreamCreate(void** s, unsigned flags) {
    Stream* st = calloc(1, sizeof(Stream));
    st->flags = flags;
    *s = st;
    return CUDA_SUCCESS;
}
CUresult cuStreamDestroy_v2(void* s) {
    if (is_legacy(s)) return CUDA_ERROR_INVALID_HANDLE;
    Stream* st = s;
    if (st->capturing) return complain(CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED, "stream destroyed while capturing");
    free(st->captured.nodes);
    free(st);
    return CUDA_SUCCESS;
}
CUresult cuStreamSynchronize(void* s) { return refuse_if_capturing(s, "cuStreamSynchronize"); }
CUresult cuStreamWaitEvent(void* s, void* e, unsigned flags) {
    (void)e;
    (void)flags;
    return refuse_if_capturing(s, "cuStreamWaitEvent");
}

CUresult cuMemAllocAsync(CUdeviceptr* p, size_t bytes, void* s) {
    CUresult r = refuse_if_capturing(s, "cuMemAllocAsync");
    return r ? r : mem_alloc(p, bytes);
}
CUresult cuMemFreeAsync(CUdeviceptr p, void* s) {
    CUresult r = refuse_if_capturing(s, "cuMemFreeAsync");
    return r ? r : mem_free(p);
}
CUresult cuMemsetD8Async(CUdeviceptr p, unsigned char v, size_t n, void* s) {
    CUresult r = refuse_if_capturing(s, "cuMemsetD8Async");
    if (!r) r = check_range(p, n, "cuMemsetD8Async");
    if (!r) memset((void*)(uintptr_t)p, v, n);
    return r;
}
CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr dst, const void* src, size_t n, void* s) {
    CUresult r = refuse_if_capturing(s, "cuMemcpyHtoDAsync");
    if (!r) r = check_range(dst, n, "cuMemcpyHtoDAsync");
    if (!r) memcpy((void*)(uintptr_t)dst, src, n);
    return r;
}
CUresult cuMemcpyDtoHAsync_v2(void* dst, CUdeviceptr src, size_t n, void* s) {
    CUresult r = refuse_if_capturing(s, "cuMemcpyDtoHAsync");
    if (!r) r = check_range(src, n, "cuMemcpyDtoHAsync");
    if (!r) memcpy(dst, (const void*)(uintptr_t)src, n);
    return r;
}

CUresult cuEventCreate(void** e, unsigned flags) {
    Event* ev = calloc(1, sizeof(Event));
    ev->flags = flags;
    *e = ev;
    return CUDA_SUCCESS;
}
CUresult cuEventDestroy_v2(void* e) { free(e); return CUDA_SUCCESS; }
CUresult cuEventRecord(void* e, void* s) {
    CUresult r = refuse_if_capturing(s, "cuEventRecord");
    if (r) return r;
    Event* ev = e;
    ev->recorded = 1;
    ev->ms = now_ms();
    return CUDA_SUCCESS;
}
CUresult cuEventSynchronize(void* e) { (void)e; return CUDA_SUCCESS; }
CUresult cuEventElapsedTime(float* ms, void* start, void* end) {
    Event *a = start, *b = end;
    if ((a->flags | b->flags) & 2) return complain(CUDA_ERROR_INVALID_HANDLE, "elapsed time of an event without timing");
    if (!a->recorded || !b->recorded) return complain(CUDA_ERROR_INVALID_HANDLE, "elapsed time of an event never recorded");
    *ms = (float)(b->ms - a->ms);
    return CUDA_SUCCESS;
}

CUresult cuModuleLoadData(void** module, const void* image) {
    const char* text = image;
    if (strncmp(text, PTX_MARK, strlen(PTX_MARK)) != 0) return CUDA_ERROR_INVALID_PTX;
    const char* launcher_path = getenv("RGNN_HOST_CUDA_LAUNCHER");
    const char* workdir = getenv("RGNN_HOST_CUDA_WORKDIR");
    if (!launcher_path || !workdir) return complain(CUDA_ERROR_INVALID_VALUE, "RGNN_HOST_CUDA_LAUNCHER and RGNN_HOST_CUDA_WORKDIR must be set");
    char* launcher = read_file(launcher_path, 0);
    if (!launcher) return complain(CUDA_ERROR_INVALID_VALUE, "cannot read %s", launcher_path);
    static unsigned counter;
    pthread_mutex_lock(&lock);
    unsigned id = counter++;
    pthread_mutex_unlock(&lock);
    char cpp[4096], so[4096], command[16384];
    snprintf(cpp, sizeof cpp, "%s/m%d-%u.cpp", workdir, (int)getpid(), id);
    snprintf(so, sizeof so, "%s/m%d-%u.so", workdir, (int)getpid(), id);
    FILE* f = fopen(cpp, "w");
    if (!f) return complain(CUDA_ERROR_INVALID_VALUE, "cannot write %s", cpp);
    // Like the host emulation: threads always run concurrently (no barrier analysis here).
    fprintf(f, "#define RGNN_HOST_EMULATION 1\n%s\n%s\nextern \"C\" unsigned rgnn_host_params() { return rg_host_param_count(rgnn_kernel); }\n",
            text + strlen(PTX_MARK), launcher);
    fclose(f);
    free(launcher);
    const char* cxx = getenv("RGNN_HOST_CXX");
    snprintf(command, sizeof command, "%s -std=c++17 -O1 -shared -fPIC -w -o '%s' '%s' -lpthread", cxx ? cxx : "c++", so, cpp);
    if (system(command) != 0) return complain(CUDA_ERROR_INVALID_PTX, "%s does not compile", cpp);
    void* library = dlopen(so, RTLD_NOW | RTLD_LOCAL);
    if (!library) return complain(CUDA_ERROR_INVALID_PTX, "%s", dlerror());
    Module* m = calloc(1, sizeof(Module));
    m->library = library;
    m->launch = (HostLaunch)dlsym(library, "rgnn_host_launch");
    unsigned (*count)(void) = (unsigned (*)(void))dlsym(library, "rgnn_host_params");
    if (!m->launch || !count) return complain(CUDA_ERROR_INVALID_PTX, "%s lacks the launcher", so);
    m->params = count();
    *module = m;
    return CUDA_SUCCESS;
}
CUresult cuModuleUnload(void* module) {
    Module* m = module;
    dlclose(m->library);
    free(m);
    return CUDA_SUCCESS;
}
CUresult cuModuleGetFunction(void** function, void* module, const char* name) {
    if (strcmp(name, "rgnn_kernel") != 0) return CUDA_ERROR_NOT_FOUND;
    Function* f = calloc(1, sizeof(Function));
    f->module = module;
    *function = f;
    return CUDA_SUCCESS;
}

CUresult cuLaunchKernel(void* function, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                        unsigned shared_bytes, void* s, void** params, void** extra) {
    Function* f = function;
    if (!f) return CUDA_ERROR_INVALID_HANDLE;
    if (extra) return complain(CUDA_ERROR_NOT_SUPPORTED, "launch with `extra` parameters");
    if (shared_bytes) return complain(CUDA_ERROR_NOT_SUPPORTED, "launch with dynamic shared memory");
    if (!gx || !gy || !gz || gy > 65535 || gz > 65535 || gx > 0x7fffffffu)
        return complain(CUDA_ERROR_INVALID_VALUE, "grid %u x %u x %u", gx, gy, gz);
    if (!bx || !by || bz != 1 || bx * by > 1024 || by > 1024)
        return complain(CUDA_ERROR_INVALID_VALUE, "block %u x %u x %u", bx, by, bz);
    unsigned n = f->module->params;
    if (n > 64 || (n && !params)) return complain(CUDA_ERROR_INVALID_VALUE, "%u parameters", n);
    KernelNode k = {f, {gx, gy, gz}, {bx, by, bz}, n, {0}};
    for (unsigned i = 0; i < n; i++) {
        k.params[i] = *(const uint64_t*)params[i];
        // Every rgnn kernel parameter is an array: it must start inside a live allocation.
        if (check_range(k.params[i], 1, "kernel parameter")) return complain(CUDA_ERROR_INVALID_VALUE, "parameter %u", i);
    }
    if (!is_legacy(s) && ((Stream*)s)->capturing) {
        if (!f->loaded) {
            ((Stream*)s)->invalidated = 1;
            return complain(CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED, "a kernel's first launch (lazy loading) inside a capture");
        }
        push_node(&((Stream*)s)->captured, k);
        // RGNN_HOST_CUDA_CAPTURE_DELAY_MS holds each captured launch back, widening the window
        // in which other threads' work could (wrongly) land in the capture.
        const char* delay = getenv("RGNN_HOST_CUDA_CAPTURE_DELAY_MS");
        if (delay) usleep((useconds_t)(1000 * atoi(delay)));
        return CUDA_SUCCESS;
    }
    if (is_legacy(s) && captures_in_progress) return complain(CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED, "launch on the legacy stream during a capture");
    f->loaded = 1;
    return run_kernel(&k);
}

CUresult cuStreamBeginCapture_v2(void* s, int mode) {
    (void)mode;
    if (is_legacy(s)) return complain(CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED, "capture on the legacy stream");
    Stream* st = s;
    if (st->capturing) return complain(CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED, "capture on a stream already capturing");
    st->capturing = 1;
    st->invalidated = 0;
    st->captured.n = 0;
    __atomic_add_fetch(&captures_in_progress, 1, __ATOMIC_SEQ_CST);
    return CUDA_SUCCESS;
}
CUresult cuStreamEndCapture(void* s, void** graph) {
    if (is_legacy(s)) return CUDA_ERROR_INVALID_HANDLE;
    Stream* st = s;
    if (!st->capturing) return complain(CUDA_ERROR_INVALID_VALUE, "end of a capture never begun");
    st->capturing = 0;
    __atomic_sub_fetch(&captures_in_progress, 1, __ATOMIC_SEQ_CST);
    if (st->invalidated) {
        *graph = 0;
        return CUDA_ERROR_STREAM_CAPTURE_INVALIDATED;
    }
    Graph* g = calloc(1, sizeof(Graph));
    g->nodes = st->captured;
    st->captured = (NodeList){0};
    *graph = g;
    return CUDA_SUCCESS;
}
CUresult cuGraphInstantiateWithFlags(void** exec, void* graph, unsigned long long flags) {
    (void)flags;
    Graph* g = graph;
    Graph* e = calloc(1, sizeof(Graph));
    e->nodes.n = e->nodes.cap = g->nodes.n;
    e->nodes.nodes = malloc((g->nodes.n + 1) * sizeof(KernelNode));
    memcpy(e->nodes.nodes, g->nodes.nodes, g->nodes.n * sizeof(KernelNode));
    *exec = e;
    return CUDA_SUCCESS;
}
CUresult cuGraphUpload(void* exec, void* s) {
    (void)exec;
    return refuse_if_capturing(s, "cuGraphUpload");
}
CUresult cuGraphLaunch(void* exec, void* s) {
    CUresult r = refuse_if_capturing(s, "cuGraphLaunch");
    if (r) return r;
    Graph* e = exec;
    for (size_t i = 0; i < e->nodes.n; i++) {
        // The graph holds addresses: each must still be allocated when it is replayed.
        for (unsigned p = 0; p < e->nodes.nodes[i].n_params; p++)
            if (check_range(e->nodes.nodes[i].params[p], 1, "replayed kernel parameter")) return CUDA_ERROR_LAUNCH_FAILED;
        r = run_kernel(&e->nodes.nodes[i]);
        if (r) return r;
    }
    return CUDA_SUCCESS;
}
static void destroy_graph(Graph* g) {
    free(g->nodes.nodes);
    free(g);
}
CUresult cuGraphExecDestroy(void* exec) { destroy_graph(exec); return CUDA_SUCCESS; }
CUresult cuGraphDestroy(void* graph) { destroy_graph(graph); return CUDA_SUCCESS; }

static const char* error_name(CUresult r) {
    switch (r) {
    case CUDA_SUCCESS: return "CUDA_SUCCESS";
    case CUDA_ERROR_INVALID_VALUE: return "CUDA_ERROR_INVALID_VALUE";
    case CUDA_ERROR_OUT_OF_MEMORY: return "CUDA_ERROR_OUT_OF_MEMORY";
    case CUDA_ERROR_NOT_INITIALIZED: return "CUDA_ERROR_NOT_INITIALIZED";
    case CUDA_ERROR_INVALID_DEVICE: return "CUDA_ERROR_INVALID_DEVICE";
    case CUDA_ERROR_INVALID_PTX: return "CUDA_ERROR_INVALID_PTX";
    case CUDA_ERROR_INVALID_HANDLE: return "CUDA_ERROR_INVALID_HANDLE";
    case CUDA_ERROR_NOT_FOUND: return "CUDA_ERROR_NOT_FOUND";
    case CUDA_ERROR_NOT_READY: return "CUDA_ERROR_NOT_READY";
    case CUDA_ERROR_LAUNCH_FAILED: return "CUDA_ERROR_LAUNCH_FAILED";
    case CUDA_ERROR_ILLEGAL_ADDRESS: return "CUDA_ERROR_ILLEGAL_ADDRESS";
    case CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES: return "CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES";
    case CUDA_ERROR_NOT_SUPPORTED: return "CUDA_ERROR_NOT_SUPPORTED";
    case CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED: return "CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED";
    case CUDA_ERROR_STREAM_CAPTURE_INVALIDATED: return "CUDA_ERROR_STREAM_CAPTURE_INVALIDATED";
    default: return 0;
    }
}
CUresult cuGetErrorName(CUresult r, const char** s) {
    *s = error_name(r);
    return *s ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}
CUresult cuGetErrorString(CUresult r, const char** s) {
    *s = error_name(r);
    return *s ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}

// ---- NVRTC ----
typedef struct { char* source; char* ptx; char* log; } Program;
int nvrtcVersion(int* major, int* minor) { *major = 12; *minor = 8; return 0; }
const char* nvrtcGetErrorString(int r) { return r == 0 ? "NVRTC_SUCCESS" : "NVRTC_ERROR_COMPILATION"; }
int nvrtcCreateProgram(void** prog, const char* source, const char* name, int n_headers, const char* const* headers,
                       const char* const* include_names) {
    (void)name;
    (void)headers;
    (void)include_names;
    if (n_headers != 0) return 3;  // rgnn's sources are self-contained
    Program* p = calloc(1, sizeof(Program));
    p->source = strdup(source);
    p->log = strdup("");
    *prog = p;
    return 0;
}
// Checks what rgnn asks of NVRTC: the device's architecture and an explicit C++ standard.
int nvrtcCompileProgram(void* prog, int n_options, const char* const* options) {
    Program* p = prog;
    char arch[64];
    snprintf(arch, sizeof arch, "--gpu-architecture=sm_%d%d", ARCH_MAJOR, ARCH_MINOR);
    int has_arch = 0, has_std = 0;
    for (int i = 0; i < n_options; i++) {
        has_arch |= strcmp(options[i], arch) == 0;
        has_std |= strncmp(options[i], "--std=c++", 9) == 0;
    }
    if (!has_arch || !has_std || !strstr(p->source, "rgnn_kernel")) {
        free(p->log);
        p->log = strdup("host stand-in: expected --gpu-architecture of the device, --std=c++NN and an rgnn_kernel entry");
        return 6;  // NVRTC_ERROR_COMPILATION
    }
    size_t n = strlen(PTX_MARK) + strlen(p->source) + 1;
    p->ptx = malloc(n);
    snprintf(p->ptx, n, "%s%s", PTX_MARK, p->source);
    return 0;
}
int nvrtcGetPTXSize(void* prog, size_t* n) {
    Program* p = prog;
    if (!p->ptx) return 4;
    *n = strlen(p->ptx) + 1;
    return 0;
}
int nvrtcGetPTX(void* prog, char* out) {
    Program* p = prog;
    if (!p->ptx) return 4;
    memcpy(out, p->ptx, strlen(p->ptx) + 1);
    return 0;
}
int nvrtcGetProgramLogSize(void* prog, size_t* n) { *n = strlen(((Program*)prog)->log) + 1; return 0; }
int nvrtcGetProgramLog(void* prog, char* out) {
    Program* p = prog;
    memcpy(out, p->log, strlen(p->log) + 1);
    return 0;
}
int nvrtcDestroyProgram(void** prog) {
    Program* p = *prog;
    free(p->source);
    free(p->ptx);
    free(p->log);
    free(p);
    *prog = 0;
    return 0;
}
