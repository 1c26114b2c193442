// Runs one kernel of a cross-compiled cpu_kernels library, so that the aarch64 kernels can be tested under
// qemu-aarch64-static from the x86 test suite without an aarch64 Python or MindSpore (tests/arm64/emulated.py).
//
// Usage: kernel_driver LIBRARY CALL RESULT, or kernel_driver LIBRARY --ask FUNCTION to print what one of the
// library's informational functions answers (Int8DotProducts a name, the others a number). CALL names the kernel
// and holds every parameter of MindSpore's aot calling convention (inputs, then outputs): for each its dtype, shape
// and bytes. The driver calls the kernel as
// MindSpore would and writes every parameter back to RESULT in the same format, so outputs and the inputs a kernel
// updates in place (KV caches) come back alike. An address table (CausalLm's layers, a LoRA adapter table) names
// tensors of the calling process, which cannot cross: CALL then carries those tensors as regions after the
// parameters, and relocations (parameter, element, region) that set each address to its region's copy here; the
// regions are written back after the parameters. Exit status: 0, or the kernel's non-zero return, or 100 + a usage
// or file error.

#include <dlfcn.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

namespace {

struct Parameter {
  std::string dtype;
  std::vector<int64_t> shape;
  std::vector<char> bytes;
};

template <typename T>
bool Read(FILE *file, T *value) {
  return std::fread(value, sizeof(T), 1, file) == 1;
}

bool ReadString(FILE *file, std::string *text) {
  uint32_t size = 0;
  if (!Read(file, &size)) return false;
  text->resize(size);
  return size == 0 || std::fread(text->data(), 1, size, file) == size;
}

bool ReadBytes(FILE *file, std::vector<char> *bytes) {
  uint64_t size = 0;
  if (!Read(file, &size)) return false;
  bytes->resize(size);
  return size == 0 || std::fread(bytes->data(), 1, size, file) == size;
}

struct Call {
  std::string kernel;
  std::vector<Parameter> parameters;
  std::vector<std::vector<char>> regions;
};

// Reads CALL and points every relocated address at its region.
bool ReadCall(const char *path, Call *call) {
  FILE *file = std::fopen(path, "rb");
  if (file == nullptr) return false;
  uint32_t count = 0;
  bool ok = ReadString(file, &call->kernel) && Read(file, &count);
  call->parameters.resize(ok ? count : 0);
  for (Parameter &parameter : call->parameters) {
    uint32_t ndim = 0;
    ok = ok && ReadString(file, &parameter.dtype) && Read(file, &ndim);
    parameter.shape.resize(ok ? ndim : 0);
    for (int64_t &extent : parameter.shape) ok = ok && Read(file, &extent);
    ok = ok && ReadBytes(file, &parameter.bytes);
  }
  ok = ok && Read(file, &count);
  call->regions.resize(ok ? count : 0);
  for (std::vector<char> &region : call->regions) ok = ok && ReadBytes(file, &region);
  ok = ok && Read(file, &count);
  for (uint32_t i = 0; ok && i < count; ++i) {
    uint32_t parameter = 0, region = 0;
    uint64_t element = 0;
    ok = Read(file, &parameter) && Read(file, &element) && Read(file, &region) &&
         parameter < call->parameters.size() && region < call->regions.size() &&
         (element + 1) * sizeof(int64_t) <= call->parameters[parameter].bytes.size();
    if (ok) {
      const int64_t address = reinterpret_cast<int64_t>(call->regions[region].data());
      std::memcpy(call->parameters[parameter].bytes.data() + element * sizeof(int64_t), &address, sizeof(address));
    }
  }
  std::fclose(file);
  return ok;
}

bool WriteBytes(FILE *file, const std::vector<char> &bytes) {
  const uint64_t size = bytes.size();
  return std::fwrite(&size, sizeof(size), 1, file) == 1 &&
         (size == 0 || std::fwrite(bytes.data(), 1, size, file) == size);
}

bool WriteResult(const char *path, const Call &call) {
  FILE *file = std::fopen(path, "wb");
  if (file == nullptr) return false;
  bool ok = true;
  for (const Parameter &parameter : call.parameters) ok = ok && WriteBytes(file, parameter.bytes);
  for (const std::vector<char> &region : call.regions) ok = ok && WriteBytes(file, region);
  return std::fclose(file) == 0 && ok;
}

typedef int (*Kernel)(int, void **, int *, int64_t **, const char **, void *, void *);

int Ask(void *library, const std::string &function) {
  void *symbol = dlsym(library, function.c_str());
  if (symbol == nullptr) return 104;
  if (function == "Int8DotProducts") {
    std::printf("%s\n", reinterpret_cast<const char *(*)()>(symbol)());
  } else {
    std::printf("%d\n", reinterpret_cast<int (*)()>(symbol)());
  }
  return 0;
}

}  // namespace

int main(int argc, char **argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: %s LIBRARY CALL RESULT, or %s LIBRARY --ask FUNCTION\n", argv[0], argv[0]);
    return 101;
  }
  void *library = dlopen(argv[1], RTLD_NOW);
  if (library == nullptr) {
    std::fprintf(stderr, "cannot load %s: %s\n", argv[1], dlerror());
    return 102;
  }
  if (std::string(argv[2]) == "--ask") return Ask(library, argv[3]);
  Call call;
  if (!ReadCall(argv[2], &call)) {
    std::fprintf(stderr, "cannot read the call %s\n", argv[2]);
    return 103;
  }
  const auto kernel = reinterpret_cast<Kernel>(dlsym(library, call.kernel.c_str()));
  if (kernel == nullptr) {
    std::fprintf(stderr, "%s has no kernel %s\n", argv[1], call.kernel.c_str());
    return 104;
  }
  std::vector<void *> data;
  std::vector<int> ndims;
  std::vector<int64_t *> shapes;
  std::vector<const char *> dtypes;
  for (Parameter &parameter : call.parameters) {
    data.push_back(parameter.bytes.data());
    ndims.push_back(static_cast<int>(parameter.shape.size()));
    shapes.push_back(parameter.shape.data());
    dtypes.push_back(parameter.dtype.c_str());
  }
  const int status = kernel(static_cast<int>(call.parameters.size()), data.data(), ndims.data(), shapes.data(),
                            dtypes.data(), nullptr, nullptr);
  if (status != 0) return status;
  return WriteResult(argv[3], call) ? 0 : 105;
}
